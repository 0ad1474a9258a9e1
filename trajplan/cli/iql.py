"""`trajplan iql`: the Implicit Q-Learning baseline and critic (trajplan.baselines.iql)."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

from trajplan.cli.options import THREADS, console, set_threads
from trajplan.errors import TrajplanError


def iql_cmd(
    dataset: str = typer.Option(..., help="Minari dataset id, e.g. local/hopper/mixed-v0."),
    out: str = typer.Option(..., help="Run directory to create (must not exist)."),
    env: str = typer.Option(None, help="Env (default: the one the dataset was recorded in)."),
    steps: int = typer.Option(
        1_000_000,
        help="Gradient steps (the paper: 1M, about 3.5 hours at 80 a second on one CPU "
        "thread; --steps 20000 for a first look).",
    ),
    expectile: float = typer.Option(
        None,
        help="Expectile tau of V, in (0, 1) (default: the env's preset: locomotion 0.7, "
        "AntMaze and PointMaze 0.9).",
    ),
    temperature: float = typer.Option(
        None,
        help="Beta of the actor's weights exp(beta (Q - V)), >= 0 (default: the env's preset: "
        "locomotion 3, AntMaze and PointMaze 10).",
    ),
    seed: int = typer.Option(0, help="Seed of the initial weights and the batches."),
    batch_size: int = typer.Option(256, help="Transitions per step."),
    hidden: str = typer.Option("256,256", help="Hidden layer sizes of every net, comma-separated."),
    device: str = typer.Option("cpu", help="Train on cpu, cuda, cuda:N or auto."),
    threads: int = THREADS,
    progress: bool = typer.Option(True, help="Show a progress bar (plain lines without a TTY)."),
) -> None:
    """Train IQL (Implicit Q-Learning): a policy to evaluate next to TT and BC, and a critic
    (Q and V) for TT + Q. The other settings are the paper's for the env's domain.

    Writes RUN/config.json, policy.actor.safetensors, critic.safetensors, metrics.jsonl.

    Evaluate it like any run, on the same seeds:

      trajplan iql --dataset local/hopper/mixed-v0 --out runs/iql --steps 20000
      trajplan eval runs/iql runs/bc --episodes 10
    """
    from trajplan.baselines.iql import IQLConfig, dataset_env, iql_preset, train_iql

    set_threads(threads)
    try:
        sizes = [int(h) for h in hidden.split(",")]
    except ValueError:
        raise TrajplanError(f"--hidden must be comma-separated integers, got {hidden!r}") from None
    given: dict[str, Any] = {"expectile": expectile, "temperature": temperature}
    chosen = {k: v for k, v in given.items() if v is not None}
    chosen.update(steps=steps, seed=seed, batch_size=batch_size, hidden=sizes)
    dataclasses.replace(IQLConfig(), **chosen).check()  # bad values fail before any reading
    info = dataset_env(dataset, env)
    cfg = dataclasses.replace(iql_preset(info.gym_id), **chosen)
    path = train_iql(dataset, out, cfg, progress, env=info.name, device=device)
    console.print(f"wrote IQL run [bold]{path}[/]")
