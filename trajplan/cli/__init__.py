"""The `trajplan` command line: a thin layer over the Python API.

This module holds the command tree (the typer apps and which function each command runs) and
`main`; every command lives in the module of its group: `data`, `train`, `plan` (plan and
eval), `bc`, `iql`, `plot` (plot and aggregate), `hub`, `predict` (predict and ensemble),
with what they share in `options`.

Every command turns a TrajplanError into one red line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from trajplan.cli import bc, data, hub, iql, plan, plot, predict, train
from trajplan.cli.options import HELP, console, err_console
from trajplan.errors import TrajplanError

__all__ = ["app", "console", "err_console", "main"]

app = typer.Typer(
    name="trajplan",
    help="The Trajectory Transformer: train on Minari datasets, plan in Gymnasium MuJoCo envs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=HELP,
)
data_app = typer.Typer(
    help="Find, inspect, download and create Minari datasets.",
    no_args_is_help=True,
    context_settings=HELP,
)
app.add_typer(data_app, name="data")
hub_app = typer.Typer(
    help="Share runs on the Hugging Face Hub (pip install 'trajplan\\[hub]').",
    no_args_is_help=True,
    context_settings=HELP,
)
app.add_typer(hub_app, name="hub")


@app.command()
def version() -> None:
    """Print the trajplan version."""
    from trajplan import __version__

    console.print(__version__)


def _print_version(value: bool) -> None:
    if value:
        version()
        raise typer.Exit()


@app.callback()
def _main(
    show_version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version."
    ),
) -> None:
    """The Trajectory Transformer: train on Minari datasets, plan in Gymnasium MuJoCo envs."""


# The commands, in the order `trajplan --help` lists them.
data_app.command("list")(data.data_list)
data_app.command("info")(data.data_info)
data_app.command("download")(data.data_download)
data_app.command("collect")(data.data_collect)
data_app.command("from-replay")(data.data_from_replay)
app.command("plan")(plan.plan)
app.command("eval")(plan.eval_cmd)
app.command("plot")(plot.plot_cmd)
app.command("aggregate")(plot.aggregate_cmd)
hub_app.command("push")(hub.hub_push)
hub_app.command("pull")(hub.hub_pull)
app.command("bc")(bc.bc_cmd)
app.command("iql")(iql.iql_cmd)
app.command("train")(train.train)
app.command("predict")(predict.predict_cmd)
app.command("ensemble")(predict.ensemble_cmd)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    try:
        app(args=argv)
    except TrajplanError as exc:
        message = escape(str(exc))  # "[hub]" in a message is text, not markup
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
