"""The `trajplan` command line: a thin layer over the Python API.

Every command turns a TrajplanError into one red line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

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


# -- data list / info / download (trajplan.datasets) ---------------------------------------------


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@data_app.command("list")
def data_list() -> None:
    """List the Minari datasets on this machine ($MINARI_DATASETS_PATH or ~/.minari/datasets).

    Reference scores come from the dataset's metadata, else from the D4RL constants.
    """
    from rich.table import Table

    from trajplan.datasets import datasets_root, local_dataset_dirs, local_datasets

    rows = local_datasets()
    if not rows:
        console.print(
            f"no datasets in {datasets_root()}: get one with `trajplan data download ID` "
            "or create one with `trajplan data collect ...`"
        )
        return
    table = Table(title=f"Minari datasets in {datasets_root()}")
    table.add_column("id", no_wrap=True)
    table.add_column("episodes", justify="right")
    table.add_column("steps", justify="right")
    table.add_column("env")
    table.add_column("reference scores")
    for r in rows:
        refs = "-"
        if r["ref_min"] is not None:
            source = "D4RL" if r["ref_source"].startswith("D4RL") else "metadata"
            refs = f"{r['ref_min']:g} .. {r['ref_max']:g} ({source})"
        table.add_row(r["id"], _fmt(r["episodes"]), _fmt(r["steps"]), _fmt(r["env"]), refs)
    console.print(table)
    broken = sorted(set(local_dataset_dirs()) - {r["id"] for r in rows})
    if broken:  # Minari's listing skips datasets it cannot read
        console.print(
            f"[yellow]{len(broken)} unreadable: {', '.join(broken)} "
            "(trajplan data info ID says why)[/]",
            highlight=False,
        )


@data_app.command("info")
def data_info(
    dataset_id: str = typer.Argument(..., help="Local Minari id, e.g. mujoco/hopper/medium-v0."),
) -> None:
    """Show one local dataset: size, env, spaces, reference scores and where they come from."""
    from rich.table import Table

    from trajplan.datasets import dataset_info

    info = dataset_info(dataset_id)
    table = Table(title=dataset_id, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in info.items():
        if key == "combined_datasets":
            value = ", ".join(value) or None
        table.add_row(key.replace("_", " "), _fmt(value))
    console.print(table)


@data_app.command("download")
def data_download(
    dataset_id: str = typer.Argument(
        ...,
        help="Remote Minari id, e.g. mujoco/halfcheetah/medium-v0; 'a+b' or "
        "'.../medium-expert-v0' fetch both parts.",
    ),
    force: bool = typer.Option(False, "--force", help="Download again even if it is local."),
) -> None:
    """Fetch a dataset from Minari's remote (needs network and `pip install 'trajplan\\[hub]'`).

    Remote MuJoCo datasets: mujoco/{halfcheetah,hopper,walker2d,ant}/{simple,medium,expert}-v0.
    """
    from trajplan.datasets import download_dataset

    for path in download_dataset(dataset_id, force=force):
        console.print(f"dataset ready at {path}")


# -- data collect / from-replay (trajplan.collect) ------------------------------------------------


@data_app.command("collect")
def data_collect(
    env: str = typer.Option(..., help="Env short name (halfcheetah, hopper, ...) or Gymnasium id."),
    policy: str = typer.Option(
        ...,
        help="'random'; 'medium' or 'expert' (the actor shipped for this env); a path to an "
        "exported actor (*.actor.safetensors, see scripts/train_behavior.py); or a trajplan "
        "run directory (its planner acts).",
    ),
    steps: int = typer.Option(..., help="Env steps in total (whole episodes; the last is cut)."),
    dataset_id: str = typer.Option(
        ..., help="Minari id to create, e.g. local/hopper/medium-v0 (namespace/name-vN)."
    ),
    seed: int = typer.Option(0, help="Episode i is reset with seed+i: same seed, same dataset."),
    force: bool = typer.Option(False, "--force", help="Replace an existing dataset of that id."),
    max_episode_steps: int = typer.Option(
        None, help="Cut episodes at this length (default: the env's own limit, 1000 for MuJoCo)."
    ),
    mix_random: str = typer.Option(
        "0",
        help="Mixed-quality data: each episode takes uniform random actions at a rate drawn "
        "from this range, e.g. 0:1 (0 = off).",
    ),
    noise: str = typer.Option(
        "0",
        help="Mixed-quality data: each episode adds Gaussian action noise with a std drawn "
        "from this range (in half-widths of the action box), e.g. 0:0.5 (0 = off).",
    ),
) -> None:
    """Roll out a behaviour policy and save the episodes as a local Minari dataset.

    Example: trajplan data collect --env hopper --policy medium --steps 100000
    --dataset-id local/hopper/medium-v0

    Mixed quality (like D4RL's medium-replay): add --mix-random 0:1 and/or --noise 0:0.5.
    """
    from trajplan.collect import collect
    from trajplan.policies import parse_range

    path = collect(
        env,
        policy,
        steps,
        dataset_id,
        seed=seed,
        force=force,
        max_episode_steps=max_episode_steps,
        random_rate=parse_range(mix_random, "--mix-random"),
        noise=parse_range(noise, "--noise"),
    )
    console.print(f"wrote dataset [bold]{dataset_id}[/] to {path}")


@data_app.command("from-replay")
def data_from_replay(
    env: str = typer.Option(..., help="Env the replay was recorded in (short name or id)."),
    replay: str = typer.Option(..., help="replay_*.npz written by scripts/train_behavior.py."),
    dataset_id: str = typer.Option(
        ..., help="Minari id to create, e.g. local/hopper/medium-replay-v0."
    ),
    max_steps: int = typer.Option(None, help="Keep only the episodes within the first N steps."),
    force: bool = typer.Option(False, "--force", help="Replace an existing dataset of that id."),
) -> None:
    """Turn a SAC run's replay buffer into a Minari dataset (D4RL's medium-replay)."""
    from trajplan.collect import from_replay

    path = from_replay(env, replay, dataset_id, max_steps=max_steps, force=force)
    console.print(f"wrote dataset [bold]{dataset_id}[/] to {path}")


# -- plan / eval (trajplan.plan, trajplan.evaluate) ----------------------------------------------

_PLAN_HELP = "Planning (defaults: the run's own plan config, SPEC s.5)"


def _plan_options(
    horizon: int | None,
    beam_width: int | None,
    n_expand: int | None,
    cdf_act: float | None,
    k_act: int | None,
    context: int | None,
    plan_freq: int | None,
    mode: str | None,
    window: str | None,
) -> dict:
    return {
        "window": window,
        "horizon": horizon,
        "beam_width": beam_width,
        "n_expand": n_expand,
        "cdf_act": cdf_act,
        "k_act": k_act,
        "max_context_transitions": context,
        "plan_freq": plan_freq,
        "mode": mode,
    }


_HORIZON = typer.Option(
    None, help="Planned steps per plan (SPEC default 15).", rich_help_panel=_PLAN_HELP
)
_BEAM = typer.Option(None, help="Beams kept after every step (128).", rich_help_panel=_PLAN_HELP)
_EXPAND = typer.Option(
    None, help="Copies of each beam before sampling actions (2).", rich_help_panel=_PLAN_HELP
)
_CDF_ACT = typer.Option(
    None, help="Action cdf filter threshold in (0, 1] (0.6).", rich_help_panel=_PLAN_HELP
)
_K_ACT = typer.Option(None, help="Top-k filter for actions (none).", rich_help_panel=_PLAN_HELP)
_CONTEXT = typer.Option(
    None, help="Past transitions kept as context (5).", rich_help_panel=_PLAN_HELP
)
_PLAN_FREQ = typer.Option(None, help="Replan every N env steps (1).", rich_help_panel=_PLAN_HELP)
_WINDOW = typer.Option(
    None,
    help="slide (reference) or grow: keep the plan's window start, slide only past the "
    "model's block (faster, not the published semantics).",
    rich_help_panel=_PLAN_HELP,
)
_MODE = typer.Option(
    None,
    help="cached (fast, exact) or full (reference: whole window per token).",
    rich_help_panel=_PLAN_HELP,
)


_THREADS = typer.Option(
    None,
    help="CPU intra-op threads (default: torch's). Planning runs many tiny ops: 1 is often "
    "fastest, and much faster when other jobs keep the cores busy.",
)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise TrajplanError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


def _score_text(score: float | None) -> str:
    return "-" if score is None else f"{score:.1f}"


@app.command()
def plan(
    env: str = typer.Option(
        None,
        help="Env (halfcheetah, hopper, ...). Without --checkpoint, "
        "its newest trained run under --runs is used.",
    ),
    checkpoint: str = typer.Option(None, help="Run directory of a trained model."),
    runs: str = typer.Option("runs", help="Where trained runs live."),
    seed: int = typer.Option(0, help="Env reset seed and planner seed: same seed, same episode."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    threads: int = _THREADS,
    max_steps: int = typer.Option(
        None, help="Stop after this many steps (a quick look: not comparable to 1000-step scores)."
    ),
    video: str = typer.Option(
        None,
        help="Write an mp4 of the episode (needs trajplan\\[video] and "
        "a headless GL: MUJOCO_GL=egl or osmesa).",
    ),
    out: str = typer.Option(None, help="Rollout JSON (default: RUN/plan-seed{SEED}.json)."),
    horizon: int = _HORIZON,
    beam_width: int = _BEAM,
    n_expand: int = _EXPAND,
    cdf_act: float = _CDF_ACT,
    k_act: int = _K_ACT,
    context: int = _CONTEXT,
    plan_freq: int = _PLAN_FREQ,
    mode: str = _MODE,
    window: str = _WINDOW,
) -> None:
    """Plan one episode with a trained model, showing every step live.

    Example: trajplan plan --env halfcheetah --horizon 5 --beam-width 32
    """
    from pathlib import Path

    from rich.live import Live
    from rich.table import Table

    from trajplan.checkpoint import load_checkpoint
    from trajplan.evaluate import (
        check_rendering,
        check_video_path,
        prepare_rendering,
        resolve_run,
        run_episodes,
        with_overrides,
        write_video,
    )
    from trajplan.runtime import check_writable

    _set_threads(threads)
    run_dir = resolve_run(checkpoint, env, runs)
    if video:
        prepare_rendering()
        check_video_path(video)
    ckpt = load_checkpoint(run_dir, device=device)
    run_dir = ckpt.run_dir  # also for --checkpoint RUN/best.safetensors
    path = Path(out) if out else run_dir / f"plan-seed{seed}.json"
    check_writable(path.parent)  # now, not after the episode
    env_name = env or ckpt.env
    opts = _plan_options(
        horizon, beam_width, n_expand, cdf_act, k_act, context, plan_freq, mode, window
    )
    cfg = with_overrides(ckpt.config.plan, **opts)
    if video:
        check_rendering(env_name)
    frames: list = [] if video else None  # type: ignore[assignment]

    def view(info) -> Table:  # noqa: ANN001
        table = Table(title=f"{env_name} seed {seed} ({run_dir.name})", min_width=60)
        for col in ("step", "reward", "return", "score", "ms/step"):
            table.add_column(col, justify="right")
        table.add_row(
            str(info.t + 1),
            f"{info.rewards[0]:.2f}",
            f"{info.returns[0]:.1f}",
            _score_text(info.scores[0]),
            f"{info.ms_per_step:.0f}",
        )
        return table

    console.print(
        f"[bold]{run_dir}[/]: horizon {cfg.horizon}, beam {cfg.beam_width}, mode {cfg.mode}",
        highlight=False,
    )
    with Live(console=console, auto_refresh=False) as live:
        result = run_episodes(
            ckpt,
            env_name,
            1,
            seed,
            cfg,
            max_steps,
            ckpt.model.pos_emb.device,
            progress=False,
            on_step=lambda info: live.update(view(info), refresh=True),
            frames=frames,
        )
    if not console.is_terminal:
        console.line()  # the live table leaves the cursor at its end
    ep = result.episodes[0]
    from trajplan.runtime import write_json

    write_json(path, result.to_dict())
    console.print(
        f"return {ep.ret:.1f}, score {_score_text(ep.score)} ({result.refs.source}), "
        f"{ep.length} steps{' (terminated)' if ep.terminated else ''}, "
        f"{result.ms_per_step:.0f} ms/step -> {path}",
        highlight=False,
    )
    if max_steps is not None:
        console.print(f"[yellow]capped at {max_steps} steps: not comparable to full-length scores")
    if video:
        write_video(frames, video, fps=30)
        console.print(f"video -> {video}")


@app.command("eval")
def eval_cmd(
    checkpoints: list[str] = typer.Argument(None, help="Run directories to evaluate."),
    checkpoint: list[str] = typer.Option(None, help="A run directory (repeatable)."),
    env: str = typer.Option(None, help="Without checkpoints: the newest run for this env."),
    runs: str = typer.Option("runs", help="Where trained runs live."),
    episodes: int = typer.Option(10, help="Episodes per checkpoint, seeds SEED..SEED+N-1."),
    seed: int = typer.Option(0, help="First episode seed (env reset and planner)."),
    episode_steps: int = typer.Option(
        None, help="Cap episodes at N steps (quick look: not comparable to full-length scores)."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    threads: int = _THREADS,
    out: str = typer.Option(
        None,
        help="Output folder (default: RUN/eval). Every evaluation writes a new subfolder named "
        "for the run and settings, e.g. RUN-10ep-seed0-h15-b128-<time>.",
    ),
    horizon: int = _HORIZON,
    beam_width: int = _BEAM,
    n_expand: int = _EXPAND,
    cdf_act: float = _CDF_ACT,
    k_act: int = _K_ACT,
    context: int = _CONTEXT,
    plan_freq: int = _PLAN_FREQ,
    mode: str = _MODE,
    window: str = _WINDOW,
) -> None:
    """Evaluate trained models: N episodes each, planned together, with normalized scores.

    A BC run (trajplan bc) is evaluated on the same seeds, so the two compare directly.

    Writes eval.json (every episode + summary) and eval.png per checkpoint, into a new
    folder RUN/eval/<N>ep-seed<S>-h<H>-b<W>[-capped<C>]-<time>: nothing is overwritten.
    Ctrl-C or SIGTERM saves the episodes played so far, marked interrupted.
    Example: trajplan eval runs/halfcheetah-medium-2024... --episodes 10
    """
    from pathlib import Path

    from rich.table import Table

    from trajplan.bc import is_bc_run, load_bc
    from trajplan.checkpoint import load_checkpoint, read_manifest
    from trajplan.evaluate import (
        EvalInterrupted,
        check_episode_args,
        eval_name,
        resolve_run,
        run_episodes,
        save_eval,
        with_overrides,
    )
    from trajplan.runtime import Stopped, sigterm_as_interrupt, unique_dir

    _set_threads(threads)
    dirs = [*(checkpoints or []), *(checkpoint or [])]
    run_dirs = [resolve_run(d, None, runs) for d in dirs] or [resolve_run(None, env, runs)]
    opts = _plan_options(
        horizon, beam_width, n_expand, cdf_act, k_act, context, plan_freq, mode, window
    )
    # Everything that can fail cheaply fails before the first episode: configs, options,
    # and one new output folder per run (never an old one: evaluations do not overwrite).
    bases = [d.parent if d.is_file() else d for d in run_dirs]  # RUN/best.safetensors -> RUN
    names = [b.name for b in bases]
    plans = [
        None if is_bc_run(b) else with_overrides(read_manifest(b)[0].plan, **opts) for b in bases
    ]
    check_episode_args(episodes, episode_steps)
    dests = []
    for base, plan_cfg in zip(bases, plans, strict=True):
        name = eval_name(episodes, seed, plan_cfg, episode_steps)
        if out:  # runs with the same name (A/run, B/run) are told apart by their parent
            label = base.name if names.count(base.name) == 1 else f"{base.parent.name}_{base.name}"
            dests.append(unique_dir(Path(out), f"{label}-{name}"))
        else:
            dests.append(unique_dir(base / "eval", name))

    table = Table(title="trajplan eval")
    for col in ("run", "env", "episodes", "return", "score", "reference", "ms/step"):
        table.add_column(col)
    paths = []
    try:
        with sigterm_as_interrupt():
            for run_dir, base, dest in zip(run_dirs, bases, dests, strict=True):
                try:
                    if is_bc_run(base):  # a BC baseline acts on the same seeds, no planning
                        result = run_episodes(
                            load_bc(base), env, episodes, seed, None, episode_steps
                        )
                    else:
                        ckpt = load_checkpoint(run_dir, device=device)
                        cfg = with_overrides(ckpt.config.plan, **opts)
                        result = run_episodes(
                            ckpt, env, episodes, seed, cfg, episode_steps, ckpt.model.pos_emb.device
                        )
                except EvalInterrupted as stop:  # Ctrl-C / SIGTERM: keep what was played
                    partial = stop.result
                    partial.checkpoint = partial.checkpoint or str(base)
                    if partial.episodes:
                        path = save_eval(partial, dest, base / "metrics.jsonl")
                        err_console.print(
                            f"[yellow]interrupted: partial results -> {path}[/]", highlight=False
                        )
                    raise typer.Exit(128 + stop.signum) from None
                path = save_eval(result, dest, base / "metrics.jsonl")
                s = result.summary()
                se = s["return_stderr"]
                ret = f"{s['return_mean']:.1f}" + ("" if se is None else f" ± {se:.1f}")
                score = _score_text(s["score_mean"])
                if s["score_stderr"] is not None:
                    score += f" ± {s['score_stderr']:.1f}"
                ref = s["ref_source"] + ("" if s["comparable"] else f", capped at {episode_steps}")
                table.add_row(
                    base.name,
                    result.env,
                    str(s["episodes"]),
                    ret,
                    score,
                    ref,
                    f"{s['ms_per_step']:.0f}",
                )
                paths.append(path)
    except Stopped as stop:  # SIGTERM while loading or saving: nothing partial to keep
        raise typer.Exit(128 + stop.signum) from None
    finally:
        for dest in dests:  # folders of evaluations that never ran
            if dest.is_dir() and not any(dest.iterdir()):
                dest.rmdir()
    console.print(table)
    for path in paths:
        console.print(f"wrote {path} and {path.with_suffix('.png').name}", highlight=False)


# -- bc (trajplan.bc) ------------------------------------------------------------------------------


@app.command("bc")
def bc_cmd(
    dataset: str = typer.Option(..., help="Minari dataset id, e.g. local/halfcheetah/mixed-v0."),
    out: str = typer.Option(..., help="Run directory to create (must not exist)."),
    env: str = typer.Option(None, help="Env (default: the one the dataset was recorded in)."),
    steps: int = typer.Option(20_000, help="Adam steps (batch 256)."),
    hidden: str = typer.Option("256,256", help="Hidden layer sizes, comma-separated."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    seed: int = typer.Option(0, help="Seed of init, batches and the validation split."),
    threads: int = _THREADS,
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train the behaviour-cloning baseline (an MLP policy, a minute or two on a CPU).

    Evaluate it like a TT run, on the same seeds: trajplan eval RUN_TT RUN_BC --episodes 5
    """
    from trajplan.bc import BCConfig, train_bc

    _set_threads(threads)
    try:
        sizes = [int(h) for h in hidden.split(",")]
    except ValueError:
        raise TrajplanError(f"--hidden must be comma-separated integers, got {hidden!r}") from None
    cfg = BCConfig(hidden=sizes, lr=lr, steps=steps, seed=seed)
    path = train_bc(dataset, out, cfg, env=env, progress=progress)
    console.print(f"wrote BC run [bold]{path}[/]")


# -- train (trajplan.train) -----------------------------------------------------------------------


def _train_config(
    env: str | None,
    dataset: str | None,
    config: str | None,
    out: str | None,
    resume: bool,
    overrides: list[str],
    flags: dict[str, object],
):  # noqa: ANN202
    """The RunConfig for `trajplan train`: base (run / file / reference), then overrides."""
    from trajplan.checkpoint import read_manifest
    from trajplan.config import apply_overrides, config_for, load_config

    if resume:
        if out is None:
            raise TrajplanError("--resume needs --out DIR: the run directory to continue")
        if config is not None:
            raise TrajplanError(
                "--resume continues with the run's own config: drop --config "
                "(loop settings such as --max-steps or --set train.epochs=N may change)"
            )
        cfg, _ = read_manifest(out)  # the run's own config; only loop settings may change
    elif config is not None:
        cfg = load_config(config)
        if env is not None:
            cfg.env = env
        if dataset is not None:
            cfg.dataset = dataset
    elif env is not None:
        cfg = config_for(env, dataset)
    elif dataset is not None:
        from trajplan.config import RunConfig

        cfg = RunConfig(dataset=dataset)
    else:
        raise TrajplanError("give --env NAME, --dataset ID or --config FILE (see --help)")
    apply_overrides(cfg, overrides)
    for key, value in flags.items():
        if value is not None:
            setattr(cfg.train, key, value)
    return cfg


@app.command()
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
        None, help="YAML config file (e.g. configs/tiny.yaml) instead of the env's reference."
    ),
    set_: list[str] = typer.Option(
        None, "--set", help="Override any config key, repeatable: --set model.n_layer=2."
    ),
    epochs: int = typer.Option(None, help="Epochs (default: int(1e6 / windows * 50))."),
    max_steps: int = typer.Option(None, help="Stop after this many optimizer steps."),
    time_limit: float = typer.Option(None, help="Stop after this many seconds of training."),
    batch_size: int = typer.Option(None, help="Windows per optimizer step (256)."),
    lr: float = typer.Option(None, help="Peak learning rate (6e-4)."),
    seed: int = typer.Option(None, help="Seed of init, shuffling and dropout (42)."),
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
) -> None:
    """Train a Trajectory Transformer on a Minari dataset; writes a run directory.

    Examples:
      trajplan train --env halfcheetah                      (reference config, medium data)
      trajplan train --env hopper --dataset medium-expert --epochs 5
      trajplan train --config configs/tiny.yaml --dataset mujoco/hopper/medium-v0
      trajplan train --resume --out runs/halfcheetah-medium-20250101-120000
    Under torchrun (torchrun --nproc_per_node 2 -m trajplan train ...) it trains with DDP.
    The run directory holds the weights, the bins, config.json and metrics.jsonl (to plot).
    """
    from trajplan.runtime import Stopped
    from trajplan.train import train as run_training

    _set_threads(threads)
    flags = {
        "epochs": epochs,
        "max_steps": max_steps,
        "time_limit_s": time_limit,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
    }
    cfg = _train_config(env, dataset, config, out, resume, set_ or [], flags)
    try:
        run_dir = run_training(
            cfg,
            out,
            resume=resume,
            device=device,
            progress=progress,
            download=download,
            allow_data_change=allow_data_change,
        )
    except Stopped as exc:  # Ctrl-C or SIGTERM, after the checkpoint: exit 128 + signal
        raise typer.Exit(128 + exc.signum) from None
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 reports
        from trajplan.checkpoint import read_manifest

        _, doc = read_manifest(run_dir)
        loss = doc.get("last_loss")
        console.print(
            f"[bold]{run_dir}[/]: {doc.get('status')} after {doc.get('step')} steps "
            f"({doc.get('epoch')} epochs), loss {'-' if loss is None else f'{loss:.4f}'}, "
            f"{doc.get('n_params'):,} parameters",
            highlight=False,
        )


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


if __name__ == "__main__":
    main()
