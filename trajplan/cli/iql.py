"""`trajplan iql`: the Implicit Q-Learning baseline and critic (trajplan.baselines.iql)."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

from trajplan.cli.options import TRAIN_THREADS, console, parse_hidden, seed_option, set_threads
from trajplan.errors import TrajplanError


def iql_cmd(
    dataset: str = typer.Option(
        None, help="Minari dataset id, e.g. local/hopper/mixed-v0 (--resume: the run's)."
    ),
    out: str = typer.Option(..., help="Run directory to create (must not exist), or to resume."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the run in --out from its saved state, to the same weights as a run "
        "never stopped; other settings or a changed dataset are refused.",
    ),
    env: str = typer.Option(None, help="Env (default: the one the dataset was recorded in)."),
    steps: int = typer.Option(
        None,
        help="Gradient steps (default 1000000, the paper's: about 3.5 hours at 80 a second on "
        "one CPU thread; --steps 20000 for a first look).",
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
    seed: int = seed_option(None, "Seed of the initial weights and the batches (default 0)."),
    batch_size: int = typer.Option(None, help="Transitions per step (default 256)."),
    hidden: str = typer.Option(
        None, help="Hidden layer sizes of every net, comma-separated (default 256,256)."
    ),
    save_every: int = typer.Option(
        None,
        help="Save the resume state every this many steps, and on Ctrl-C / SIGTERM (default "
        "10000; --resume: the run's).",
    ),
    save_every_min: float = typer.Option(
        None,
        help="Also save it after this many minutes: a kill -9 loses at most that (default 5; "
        "--resume: the run's).",
    ),
    snapshot_every: int = typer.Option(
        None,
        help="Write RUN/snapshots/step_K, a run of the weights after K steps, every this many "
        "steps: the learning curve of one run; eval and --critic take each (--resume: the "
        "run's).",
    ),
    device: str = typer.Option("cpu", help="Train on cpu, cuda, cuda:N or auto."),
    threads: int = TRAIN_THREADS,
    progress: bool = typer.Option(True, help="Show a progress bar (plain lines without a TTY)."),
) -> None:
    """Train IQL (Implicit Q-Learning): a policy to evaluate next to TT and BC, and a critic
    (Q and V) for TT + Q. The other settings are the paper's for the env's domain.

    Writes RUN/config.json (last), policy.actor.safetensors, critic.safetensors,
    metrics.jsonl; while it trains, RUN/state.pt to resume from (Ctrl-C or SIGTERM save it
    and stop; --resume continues to the same weights as a run never stopped).

    Evaluate it like any run, on the same seeds:

      trajplan iql --dataset local/hopper/mixed-v0 --out runs/iql --steps 20000
      trajplan iql --out runs/iql --resume        # after Ctrl-C, SIGTERM or kill -9
      trajplan eval runs/iql runs/bc --episodes 10
      trajplan iql --dataset ID --out runs/iql --snapshot-every 50000
      trajplan eval runs/iql/snapshots/step_50000 runs/iql --episodes 10

    A snapshot is a point on this run's learning curve, not a run of that many steps: the
    actor's learning rate decays over all --steps.
    """
    from trajplan.baselines.iql import (
        IQLConfig,
        Saving,
        dataset_env,
        iql_preset,
        resume_settings,
        train_iql,
    )
    from trajplan.baselines.iql_state import saved_manifest
    from trajplan.runtime import Stopped

    set_threads(threads)
    flags = {"every": save_every, "every_min": save_every_min, "snapshot_every": snapshot_every}
    saving_given = {k: v for k, v in flags.items() if v is not None}
    Saving(**saving_given).check()
    given: dict[str, Any] = {"expectile": expectile, "temperature": temperature, "steps": steps}
    given.update(seed=seed, batch_size=batch_size, hidden=_sizes(hidden))
    chosen = {k: v for k, v in given.items() if v is not None}
    dataclasses.replace(IQLConfig(), **chosen).check()  # bad values fail before any reading
    if resume:
        saved = saved_manifest(out)
        if saved is None:
            console.print(f"{out} is finished: nothing to resume", highlight=False, soft_wrap=True)
            return
        cfg, saving = resume_settings(saved, chosen, saving_given)
    else:
        if dataset is None:
            raise TrajplanError("--dataset is needed for a new run (or --resume --out RUN)")
        info = dataset_env(dataset, env)
        cfg = dataclasses.replace(iql_preset(info.gym_id), **chosen)
        env, saving = info.name, Saving(**saving_given)
    try:
        path = train_iql(dataset, out, cfg, progress, env=env, device=device, resume=resume,
                         saving=saving)  # fmt: skip
    except Stopped as exc:  # Ctrl-C or SIGTERM, after saving the state: 130 or 143
        raise typer.Exit(exc.exit_code) from None
    console.print(f"wrote IQL run [bold]{path}[/]", soft_wrap=True)


def _sizes(hidden: str | None) -> list[int] | None:
    if hidden is None:
        return None
    return parse_hidden(hidden)
