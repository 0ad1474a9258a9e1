"""The `trajplan` command line: a thin layer over the Python API.

Every command turns a TrajplanError into one red line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

from trajplan.errors import TrajplanError

if TYPE_CHECKING:
    from rich.table import Table

    from trajplan.config import PlanConfig
    from trajplan.evaluate import EvalResult

console = Console()
err_console = Console(stderr=True)

_HELP = {"help_option_names": ["-h", "--help"]}  # inherited by every subcommand
app = typer.Typer(
    name="trajplan",
    help="The Trajectory Transformer: train on Minari datasets, plan in Gymnasium MuJoCo envs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=_HELP,
)
data_app = typer.Typer(
    help="Find, inspect, download and create Minari datasets.",
    no_args_is_help=True,
    context_settings=_HELP,
)
app.add_typer(data_app, name="data")
hub_app = typer.Typer(
    help="Share runs on the Hugging Face Hub (pip install 'trajplan\\[hub]').",
    no_args_is_help=True,
    context_settings=_HELP,
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
    table.add_column("id", overflow="fold")
    table.add_column("episodes", justify="right", no_wrap=True)
    table.add_column("steps", justify="right", no_wrap=True)
    table.add_column("env", overflow="fold")
    table.add_column("reference scores", overflow="fold")
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


# -- plan / eval (trajplan.planner, trajplan.evaluate) ------------------------------------------

_PLAN_HELP = "Planning (defaults: the run's own plan config; docs/method.md, Planner)"

# The planning flags of `plan` and `eval`, declared once: (flag, PlanConfig field, type, help).
_PLAN_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("horizon", "horizon", int, "Planned steps per plan (reference default 15)."),
    ("beam_width", "beam_width", int, "Beams kept after every step (128)."),
    ("n_expand", "n_expand", int, "Copies of each beam before sampling actions (2)."),
    ("cdf_act", "cdf_act", float, "Action cdf filter threshold in (0, 1] (0.6)."),
    ("k_act", "k_act", int, "Top-k filter for actions (none)."),
    ("context", "max_context_transitions", int, "Past transitions kept as context (5)."),
    ("plan_freq", "plan_freq", int, "Replan every N env steps (1)."),
    ("mode", "mode", str, "cached (fast, exact) or full (reference: whole window per token)."),
    (
        "window",
        "window",
        str,
        "slide (reference) or grow: keep the plan's window start, slide only past the "
        "model's block (faster, not the published semantics).",
    ),
)


@dataclass(frozen=True)
class PlanOptions:
    """What the planning flags and `--set plan.KEY=VALUE` of one command line ask for."""

    fields: dict[str, Any]
    sets: tuple[str, ...] = ()

    def apply(self, cfg: PlanConfig) -> PlanConfig:
        """A checked copy of a run's plan config with these options applied."""
        from trajplan.evaluate import with_overrides

        return with_overrides(cfg, self.sets, **self.fields)


def plan_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command the planning flags and `--set`; it receives them as `planning`."""
    sig = inspect.signature(command, eval_str=True)
    params = [p for name, p in sig.parameters.items() if name != "planning"]
    kw = inspect.Parameter.KEYWORD_ONLY
    for flag, _, tp, text in _PLAN_FLAGS:
        option = typer.Option(None, help=text, rich_help_panel=_PLAN_HELP)
        params.append(inspect.Parameter(flag, kw, default=option, annotation=tp | None))
    sets = typer.Option(
        None,
        "--set",
        help="Set any plan config key, repeatable: --set plan.logp_weight=0.1 (after the flags).",
        rich_help_panel=_PLAN_HELP,
    )
    params.append(inspect.Parameter("plan_set", kw, default=sets, annotation=list[str] | None))

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        fields = {field: kwargs.pop(flag) for flag, field, _, _ in _PLAN_FLAGS}
        planning = PlanOptions(fields, tuple(kwargs.pop("plan_set") or ()))
        return command(**kwargs, planning=planning)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return wrapper


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
@plan_options
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
    planning: PlanOptions | None = None,
) -> None:
    """Plan one episode with a trained model, showing every step live.

    Example: trajplan plan --env halfcheetah --horizon 5 --beam-width 32
    """
    from pathlib import Path

    from rich.live import Live
    from rich.table import Table

    from trajplan.checkpoint import load_checkpoint
    from trajplan.evaluate import resolve_run, run_episodes
    from trajplan.runtime import check_writable
    from trajplan.video import VideoRecorder, check_rendering, check_video_path, prepare_rendering

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
    assert planning is not None  # given by @plan_options
    cfg = planning.apply(ckpt.config.plan)
    recorder = VideoRecorder({0: video}) if video else None
    if video:
        check_rendering(env_name)

    def view(info) -> Table:
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
            n_episodes=1,
            seed=seed,
            plan_cfg=cfg,
            episode_steps=max_steps,
            device=ckpt.model.pos_emb.device,
            progress=False,
            on_step=lambda info: live.update(view(info), refresh=True),
            recorder=recorder,
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
    if recorder is not None and recorder.written:
        console.print(f"video -> {video} ({recorder.frames[0]} frames)", highlight=False)


def _mean_se(mean: float | None, se: float | None) -> str:
    return _score_text(mean) + ("" if mean is None or se is None else f" ± {se:.1f}")


def eval_table(rows: list[tuple[str, EvalResult]]) -> Table:
    """The `trajplan eval` summary of (run name, EvalResult) rows, readable at 80 columns:
    long run names fold, numbers never wrap, reference scores and caps go in the caption."""
    from rich.table import Table

    envs = sorted({r.gym_id for _, r in rows})
    table = Table(title=f"trajplan eval: {', '.join(envs)}", caption_justify="left")
    table.add_column("run", overflow="fold")
    for col in ("episodes", "return", "score", "ms/step"):
        table.add_column(col, justify="right", no_wrap=True)
    refs, capped = {}, set()
    for name, result in rows:
        s = result.summary()
        refs.setdefault(s["reference"], []).append(name)
        score = _mean_se(s["score_mean"], s["score_stderr"])
        if not s["comparable"]:
            capped.add(result.episode_steps)
            score += "*"
        ret = _mean_se(s["return_mean"], s["return_stderr"])
        table.add_row(name, str(s["episodes"]), ret, score, f"{s['ms_per_step']:.0f}")
    if len(refs) == 1:
        caption = f"score: normalized with reference scores from {next(iter(refs))}"
    else:
        caption = "reference scores: " + "; ".join(f"{', '.join(n)}: {r}" for r, n in refs.items())
    if capped:
        steps = ", ".join(str(c) for c in sorted(capped))
        caption += f". * episodes capped at {steps} steps: not comparable to full-length scores"
    table.caption = caption
    return table


@app.command("eval")
@plan_options
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
    video: str = typer.Option(
        None,
        help="Record episodes into this folder, DIR/RUN/seedS.mp4 (needs trajplan\\[video] and "
        "a headless GL: MUJOCO_GL=egl or osmesa).",
    ),
    video_episodes: str = typer.Option(
        "0", help="Episodes to record with --video, by index: 0,1 = the first two."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
    workers: int = typer.Option(
        1,
        help="CPU processes to split the episodes over (one thread each unless --threads): "
        "the same episodes as one process, about N times faster on N free cores.",
    ),
    planning: PlanOptions | None = None,
) -> None:
    """Evaluate trained models: N episodes each, planned together, with normalized scores.

    A BC run (trajplan bc) is evaluated on the same seeds, so the two compare directly.

    Writes eval.json (every episode + summary) and eval.png per checkpoint, into a new
    folder RUN/eval/<N>ep-seed<S>-h<H>-b<W>[-capped<C>]-<time>: nothing is overwritten.
    With --video DIR also videos of the chosen episodes (DIR/RUN/seedS.mp4, the camera
    following the agent). Ctrl-C or SIGTERM saves the episodes played so far, marked
    interrupted.
    Example: trajplan eval runs/halfcheetah-medium-2024... --episodes 10
    """
    from pathlib import Path

    from trajplan.bc import is_bc_run, load_bc
    from trajplan.checkpoint import load_checkpoint, read_manifest
    from trajplan.evaluate import EvalInterrupted, check_episode_args, resolve_run, run_episodes
    from trajplan.report import eval_name, save_eval
    from trajplan.runtime import Stopped, sigterm_as_interrupt, unique_dir
    from trajplan.video import VideoRecorder, check_rendering, parse_episodes, prepare_rendering
    from trajplan.workers import evaluate_run

    _set_threads(threads)
    dirs = [*(checkpoints or []), *(checkpoint or [])]
    run_dirs = [resolve_run(d, None, runs) for d in dirs] or [resolve_run(None, env, runs)]
    filmed = parse_episodes(video_episodes, episodes) if video else []
    if video:
        prepare_rendering()
    assert planning is not None  # given by @plan_options
    # Everything that can fail cheaply fails before the first episode: configs, options,
    # and one new output folder per run (never an old one: evaluations do not overwrite).
    bases = [d.parent if d.is_file() else d for d in run_dirs]  # RUN/best.safetensors -> RUN
    names = [b.name for b in bases]
    plans = [None if is_bc_run(b) else planning.apply(read_manifest(b)[0].plan) for b in bases]
    check_episode_args(episodes, episode_steps)
    if workers < 1:
        raise TrajplanError(f"--workers must be at least 1, got {workers}")
    if workers > 1 and (video or device.startswith("cuda")):
        raise TrajplanError("--workers > 1 splits episodes over CPU processes: without --video")
    dests = []
    for base, plan_cfg in zip(bases, plans, strict=True):
        name = eval_name(episodes, seed, plan_cfg, episode_steps)
        if out:  # runs with the same name (A/run, B/run) are told apart by their parent
            label = base.name if names.count(base.name) == 1 else f"{base.parent.name}_{base.name}"
            dests.append(unique_dir(Path(out), f"{label}-{name}"))
        else:
            dests.append(unique_dir(base / "eval", name))

    paths, rows = [], []
    videos: list = []
    try:
        with sigterm_as_interrupt():
            for run_dir, base, dest, plan_cfg in zip(run_dirs, bases, dests, plans, strict=True):
                rec = None
                if video:
                    films = {i: Path(video) / base.name / f"seed{seed + i}.mp4" for i in filmed}
                    rec = VideoRecorder(films)
                try:
                    if workers > 1:  # the same episodes, split over CPU processes
                        result = evaluate_run(
                            run_dir, seeds=range(seed, seed + episodes), env=env,
                            plan_cfg=plan_cfg, episode_steps=episode_steps,
                            workers=workers, threads=threads or 1, progress=progress,
                        )  # fmt: skip
                    elif is_bc_run(base):  # a BC baseline acts on the same seeds, no planning
                        run = load_bc(base)
                        if rec is not None:
                            check_rendering(env or run.env)
                        result = run_episodes(
                            run, env, n_episodes=episodes, seed=seed,
                            episode_steps=episode_steps, progress=progress, recorder=rec,
                        )  # fmt: skip
                    else:
                        ckpt = load_checkpoint(run_dir, device=device)
                        cfg = planning.apply(ckpt.config.plan)
                        if rec is not None:
                            check_rendering(env or ckpt.env)
                        result = run_episodes(
                            ckpt, env, n_episodes=episodes, seed=seed, plan_cfg=cfg,
                            episode_steps=episode_steps, device=ckpt.model.pos_emb.device,
                            progress=progress, recorder=rec,
                        )  # fmt: skip
                except EvalInterrupted as stop:  # Ctrl-C / SIGTERM: keep what was played
                    partial = stop.result
                    partial.checkpoint = partial.checkpoint or str(base)
                    if partial.episodes:
                        path = save_eval(partial, dest, base / "metrics.jsonl")
                        err_console.print(
                            f"[yellow]interrupted: partial results -> {path}[/]", highlight=False
                        )
                    raise typer.Exit(128 + stop.signum) from None
                videos += rec.written if rec is not None else []
                paths.append(save_eval(result, dest, base / "metrics.jsonl"))
                rows.append((base.name, result))
    except Stopped as stop:  # SIGTERM while loading or saving: nothing partial to keep
        raise typer.Exit(128 + stop.signum) from None
    finally:
        for dest in dests:  # folders of evaluations that never ran
            if dest.is_dir() and not any(dest.iterdir()):
                dest.rmdir()
    console.print(eval_table(rows))
    for path in paths:
        console.print(f"wrote {path} and {path.with_suffix('.png').name}", highlight=False)
    for path in videos:
        console.print(f"video -> {path}", highlight=False)


# -- plot / aggregate (trajplan.plot, trajplan.aggregate) ------------------------------------------


@app.command("plot")
def plot_cmd(
    paths: list[str] = typer.Argument(
        ..., help="Run directories (learning curves), or eval.json files with --scores."
    ),
    out: str = typer.Option(
        None, help="Figure file, .png or .svg (default: curves.png / scores.png)."
    ),
    x: str = typer.Option("step", help="Learning curves against 'step' or 'tokens' (seen)."),
    scores: bool = typer.Option(
        False,
        "--scores",
        help="Compare normalized scores (mean ± stderr) of eval.json files (or RUN/eval/).",
    ),
) -> None:
    """Plot learning curves of runs (TT and BC), or compare their evaluation scores.

    Examples:
      trajplan plot runs/tt-s0 runs/tt-s1 runs/bc-s0 --out curves.png
      trajplan plot --scores runs/*/eval/eval.json --out scores.svg
    """
    from trajplan.plot import plot_curves, plot_scores

    if scores:
        path = plot_scores(paths, out or "scores.png")
    else:
        path = plot_curves(paths, out or "curves.png", x=x)
    console.print(f"wrote {path}", highlight=False)


@app.command("aggregate")
def aggregate_cmd(
    evals: list[str] = typer.Argument(
        ...,
        help="eval.json files (or run directories holding eval/eval.json); LABEL=PATH puts a "
        "run in group LABEL (default: one group per policy and dataset).",
    ),
    json_out: str = typer.Option(None, "--json", help="Also write the aggregate as JSON."),
    reps: int = typer.Option(2000, help="Bootstrap samples."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
) -> None:
    """Aggregate runs over seeds: per-run scores, mean ± stderr, IQM with 95% bootstrap CIs.

    Example: trajplan aggregate runs/tt-s*/eval/eval.json runs/bc-s*/eval/eval.json --json agg.json
    """
    from trajplan.aggregate import aggregate, tables, to_json

    groups = aggregate(evals, reps=reps, seed=seed)
    for table in tables(groups):
        console.print(table)
    if json_out:
        from trajplan.runtime import write_json

        console.print(f"wrote {write_json(json_out, to_json(groups, reps, seed))}", highlight=False)


# -- hub push / pull (trajplan.hub) ---------------------------------------------------------------


@hub_app.command("push")
def hub_push(
    run: str = typer.Argument(..., help="Run directory (TT or BC) to share."),
    repo_id: str = typer.Argument(..., help="Hub model repository, e.g. you/halfcheetah-tt."),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    stage: str = typer.Option(
        None, help="Only build the upload folder (files + model card) in this new folder."
    ),
    eval_json: str = typer.Option(
        None, "--eval", help="eval.json to share (default: RUN/eval/eval.json when present)."
    ),
    token: str = typer.Option(None, help="Hub token (default: your saved Hub login or HF_TOKEN)."),
) -> None:
    """Upload a run with a generated model card (dataset, config, scores, how to reproduce).

    Example: trajplan hub push runs/halfcheetah-medium-... you/halfcheetah-tt
    """
    from trajplan.hub import build_folder, push

    if stage:
        folder = build_folder(run, stage, repo_id, eval_json)
        console.print(f"staged {run} for {repo_id} in {folder} (card: {folder}/README.md)")
        return
    url = push(run, repo_id, private=private, token=token, evaluation=eval_json)
    console.print(f"pushed {run} -> {url}", highlight=False)


@hub_app.command("pull")
def hub_pull(
    repo_id: str = typer.Argument(..., help="Hub model repository, e.g. you/halfcheetah-tt."),
    out: str = typer.Option(..., help="Folder to create: a run directory for plan/eval."),
    revision: str = typer.Option(None, help="Branch, tag or commit (default: main)."),
    token: str = typer.Option(None, help="Hub token, for private repositories."),
) -> None:
    """Download a run pushed with `trajplan hub push`; plan/eval take the folder as a run.

    Example: trajplan hub pull you/halfcheetah-tt --out runs/hc-tt && trajplan eval runs/hc-tt
    """
    from trajplan.hub import pull

    path = pull(repo_id, out, revision=revision, token=token)
    console.print(f"pulled {repo_id} into {path}: trajplan eval {path}", highlight=False)


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
):
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
