"""`trajplan train` (trajplan.training.loop): the run config from its sources
(`trajplan.training.settings.train_config`, where their precedence is the library's), then
the loop.
"""

from __future__ import annotations

import os

import typer

from trajplan.cli.options import console, seed_option, set_threads
from trajplan.errors import TrajplanError


def train(
    env: str = typer.Option(
        None, help="Env (halfcheetah, hopper, walker2d, ant): uses its reference config."
    ),
    dataset: str = typer.Option(
        None,
        help="Minari dataset id, or a level (medium, medium-replay, medium-expert) of --env. "
        "Default: the env's medium dataset.",
    ),
    config: str = typer.Option(
        None,
        help="A shipped config by name (tiny, cpu-small, cpu-recipe, hopper-medium, ...) or a "
        "YAML file, instead of the env's reference.",
    ),
    set_: list[str] = typer.Option(
        None, "--set", help="Override any config key, repeatable: --set model.n_layer=2."
    ),
    epochs: int = typer.Option(None, help="Epochs (default: int(1e6 / windows * 50))."),
    max_steps: int = typer.Option(None, help="Stop after this many optimizer steps."),
    time_limit: float = typer.Option(None, help="Stop after this many seconds of training."),
    batch_size: int = typer.Option(None, help="Windows per optimizer step (256)."),
    lr: float = typer.Option(None, help="Peak learning rate (6e-4)."),
    seed: int = seed_option(None, "Seed of init, shuffling and dropout (42)."),
    out: str = typer.Option(
        None, help="Run directory (default: runs/<env>-<level>-<time>); must not exist."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last checkpoint."
    ),
    allow_data_change: bool = typer.Option(
        False,
        "--allow-data-change",
        help="With --resume: continue even though the dataset changed since the run began.",
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    download: bool = typer.Option(False, "--download", help="Download the dataset if missing."),
    threads: int = typer.Option(
        None,
        help="CPU threads (default: torch's). On cores busy with other jobs, 1 can be faster.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    logger: list[str] = typer.Option(
        None,
        help="Loggers besides metrics.jsonl: tensorboard (RUN/tensorboard) and/or wandb "
        "(WANDB_MODE=offline works without network), e.g. --logger tensorboard,wandb.",
    ),
    seeds: str = typer.Option(
        None,
        help="Train one run per seed, e.g. 0,1,2 or 0-4, into OUT/seed<S>/ (needs --out); "
        "then trajplan eval and trajplan aggregate them.",
    ),
    jobs: int = typer.Option(
        1,
        help="With --seeds: seeds trained at once, as child processes (one GPU each when "
        "several are visible, else one CPU thread each).",
    ),
    ray: str = typer.Option(
        None,
        "--ray",
        envvar="RAY_ADDRESS",
        help="With --seeds: one Ray task per seed instead of --jobs (pip install "
        "'trajplan\\[ray]'): auto joins this machine's Ray cluster, local starts one here; "
        "--out must be on storage every node shares. Default: $RAY_ADDRESS.",
    ),
    goal: str = typer.Option(
        None,
        help="Goal-conditioned training: the observation dims that form the goal, e.g. 0,1 "
        "(a maze's x, y); sets data.goal_dims. Each window's goal is relabelled in hindsight; "
        "a maze's own goal dims are dropped from the model's observation.",
    ),
    resume_with: str = typer.Option(None, hidden=True),  # --seeds passes its children
) -> None:
    """Train a Trajectory Transformer on a Minari dataset; writes a run directory.

    Examples:
      trajplan train --env halfcheetah                      (reference config, medium data)
      trajplan train --env hopper --dataset medium-expert --epochs 5
      trajplan train --config tiny --dataset mujoco/hopper/medium-v0
      trajplan train --resume --out runs/halfcheetah-medium-20250101-120000
      trajplan train --config cpu-recipe --dataset ID --seeds 0-2 --out runs/x
      trajplan train --config pointmaze-umaze --goal 0,1      (goal-conditioned)
    Under torchrun (torchrun --nproc_per_node 2 -m trajplan train ...) it trains with DDP.
    The run directory holds the weights, the bins, config.json and metrics.jsonl (to plot).
    """
    from pathlib import Path

    from trajplan.config import RunConfig
    from trajplan.runtime import Stopped
    from trajplan.training.callbacks import check_loggers
    from trajplan.training.loop import train as run_training
    from trajplan.training.seeds import parse_seeds, train_seeds
    from trajplan.training.settings import train_config

    set_threads(threads)
    flags = {
        "epochs": epochs,
        "max_steps": max_steps,
        "time_limit_s": time_limit,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
    }
    loggers = check_loggers(logger or [])
    seed_list = parse_seeds(seeds) if seeds is not None else None
    if seed_list is not None and (out is None or seed is not None):
        raise TrajplanError("--seeds needs --out DIR (runs go to DIR/seed<S>) and no --seed")
    # with --seeds, OUT is the parent of the runs: the config comes from the flags, also
    # when resuming (each seed's run then checks it against its own)
    cfg = train_config(
        env, dataset, config, out, resume and seed_list is None, set_ or [], flags, resume_with,
        goal=goal,
    )  # fmt: skip

    def train_one(cfg: RunConfig, run_dir: str | None, resume: bool) -> Path:
        return run_training(
            cfg,
            run_dir,
            resume=resume,
            device=device,
            progress=progress,
            download=download,
            allow_data_change=allow_data_change,
            loggers=loggers,
        )

    try:
        if seed_list is None:
            run_dirs = [train_one(cfg, out, resume)]
        else:
            run_dirs = train_seeds(
                cfg, out, seed_list, train_one, resume=resume, jobs=jobs, device=device,
                log=lambda line: console.print(line, highlight=False), ray=ray,
                allow_data_change=allow_data_change,
            )  # fmt: skip
    except Stopped as exc:  # Ctrl-C or SIGTERM, after the checkpoint: 130 or 143
        raise typer.Exit(exc.exit_code) from None
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 reports
        from trajplan.runs.checkpoint import read_manifest
        from trajplan.training.saving import epochs_done

        for run_dir in run_dirs:
            _, doc = read_manifest(run_dir)
            loss = doc.get("last_loss")
            console.print(
                f"[bold]{run_dir}[/]: {doc.get('status')} after {doc.get('step')} steps "
                f"({epochs_done(doc)}), loss {'-' if loss is None else f'{loss:.4f}'}, "
                f"{doc.get('n_params'):,} parameters",
                highlight=False,
            )
        if seed_list is not None:
            dirs = " ".join(str(d) for d in run_dirs)
            console.print(
                f"next: trajplan eval {dirs} --episodes 10, then trajplan aggregate "
                f"{out}/seed*/eval",
                highlight=False,
            )
