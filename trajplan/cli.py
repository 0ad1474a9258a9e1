"""The `trajplan` command line: a thin layer over the Python API.

Every command turns a TrajplanError into one red line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from trajplan.errors import TrajplanError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="trajplan",
    help="The Trajectory Transformer: train on Minari datasets, plan in Gymnasium MuJoCo envs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Find, inspect, download and create Minari datasets.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


@app.command()
def version() -> None:
    """Print the trajplan version."""
    from trajplan import __version__

    console.print(__version__)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    try:
        app(args=argv)
    except TrajplanError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
