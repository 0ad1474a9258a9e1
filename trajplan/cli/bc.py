"""`trajplan bc`: the behaviour-cloning baseline (trajplan.baselines.bc)."""

from __future__ import annotations

import typer

from trajplan.cli.options import TRAIN_THREADS, console, parse_hidden, seed_option, set_threads


def bc_cmd(
    dataset: str = typer.Option(..., help="Minari dataset id, e.g. local/halfcheetah/mixed-v0."),
    out: str = typer.Option(..., help="Run directory to create (must not exist)."),
    env: str = typer.Option(None, help="Env (default: the one the dataset was recorded in)."),
    steps: int = typer.Option(20_000, help="Adam steps (batch 256)."),
    hidden: str = typer.Option("256,256", help="Hidden layer sizes, comma-separated."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    seed: int = seed_option(0, "Seed of init, batches and the validation split."),
    action_weighting: float = typer.Option(
        0.0,
        help="Return-weighted BC: weight each step's error by exp(BETA z), z its standardised "
        "return-to-go (as TT's data.action_weighting; 0 = plain BC).",
    ),
    goal: str = typer.Option(
        None,
        help="Goal-conditioned BC in a goal env (a maze): the goal dims, e.g. 0,1; each "
        "step's goal is relabelled in hindsight (as trajplan train --goal).",
    ),
    threads: int = TRAIN_THREADS,
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train the behaviour-cloning baseline (an MLP policy, a minute or two on a CPU).

    Evaluate it like a TT run, on the same seeds: trajplan eval RUN_TT RUN_BC --episodes 5
    Goal-conditioned: trajplan bc --dataset local/pointmaze/umaze-v0 --goal 0,1 --out RUN
    """
    from trajplan.baselines.bc import BCConfig, train_bc

    set_threads(threads)
    sizes = parse_hidden(hidden)
    cfg = BCConfig(
        hidden=sizes,
        lr=lr,
        steps=steps,
        seed=seed,
        action_weighting=action_weighting,
        goal_dims=goal,
    )
    path = train_bc(dataset, out, cfg, env=env, progress=progress)
    console.print(f"wrote BC run [bold]{path}[/]")
