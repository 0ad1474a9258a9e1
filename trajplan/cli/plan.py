"""`trajplan plan` (one episode, live) and `trajplan eval` (N episodes per run, saved):
the commands that plan (trajplan.runs, trajplan.evaluation.runner)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import typer

from trajplan.cli.options import (
    PLAN_THREADS,
    WEIGHTS,
    PlanOptions,
    console,
    err_console,
    plan_options,
    score_text,
    seed_option,
    set_threads,
)
from trajplan.errors import TrajplanError


def parse_goal(text: str) -> list[float]:
    """--goal "1.0,-1.0" -> [1.0, -1.0], or a one-line error."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise TrajplanError(f"--goal takes numbers separated by commas (1.0,-1.0), got {text!r}")
    return values


if TYPE_CHECKING:
    from rich.table import Table

    from trajplan.evaluation.evalfiles import EvalResult


@plan_options
def plan(
    env: str = typer.Option(
        None,
        help="Env (halfcheetah, hopper, ...). Without --checkpoint, "
        "its newest trained run under --runs is used.",
    ),
    checkpoint: str = typer.Option(None, help="Run directory of a trained model."),
    runs: str = typer.Option("runs", help="Where trained runs live."),
    seed: int = seed_option(0, "Env reset seed and planner seed: same seed, same episode."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    threads: int = PLAN_THREADS,
    weights: str = WEIGHTS,
    max_steps: int = typer.Option(
        None, help="Stop after this many steps (a quick look: not comparable to 1000-step scores)."
    ),
    video: str = typer.Option(
        None,
        help="Write an mp4 of the episode (needs trajplan\\[video] and "
        "a headless GL: MUJOCO_GL=egl or osmesa).",
    ),
    out: str = typer.Option(None, help="Rollout JSON (default: RUN/plan-seed{SEED}.json)."),
    goal: str = typer.Option(
        None,
        help="A goal-conditioned run (trained with --goal): plan towards this goal, e.g. "
        "1.0,-1.0 (values of its goal dims) instead of the env's own goal.",
    ),
    planning: PlanOptions | None = None,
) -> None:
    """Plan one episode with a trained model, showing every step live.

    Example: trajplan plan --env halfcheetah --horizon 5 --beam-width 32
    """
    from pathlib import Path

    from rich.live import Live
    from rich.table import Table

    from trajplan.envs.video import (
        VideoRecorder,
        check_rendering,
        check_video_path,
        prepare_rendering,
    )
    from trajplan.evaluation.evaluate import resolve_run, run_episodes
    from trajplan.evaluation.runner import eval_bytes
    from trajplan.guards import check_disk
    from trajplan.planner.memory import check_planning
    from trajplan.runs.load import load_run
    from trajplan.runtime import check_out_file

    set_threads(threads)
    run_dir = resolve_run(checkpoint, env, runs)
    if video:
        prepare_rendering()
        check_video_path(video)
    run = load_run(run_dir, device=device, weights=weights)
    if run.plan is None:
        raise TrajplanError(f"{run_dir} is a {run.kind} run: `trajplan plan` plans with a TT run")
    run_dir = run.run_dir  # also for --checkpoint RUN/best.safetensors
    if goal is not None:
        run.goal = parse_goal(goal)
    path = Path(out) if out else run_dir / f"plan-seed{seed}.json"
    check_out_file(path, "--out file")  # now, not after the episode
    env_name = env or run.env
    assert planning is not None  # given by @plan_options
    cfg = run.plan = planning.apply(run.plan)
    check_planning(run.checkpoint.model.cfg, cfg, 1, device)  # before the episode
    size = eval_bytes(1, max_steps or 1000)
    check_disk(path.parent, size, size, "the rollout JSON")
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
            score_text(info.scores[0]),
            f"{info.ms_per_step:.0f}",
        )
        return table

    console.print(
        f"[bold]{run_dir}[/]: horizon {cfg.horizon}, beam {cfg.beam_width}, mode {cfg.mode}",
        highlight=False,
    )
    with Live(console=console, auto_refresh=False) as live:
        result = run_episodes(
            run,
            env_name,
            n_episodes=1,
            seed=seed,
            episode_steps=max_steps,
            device=run.checkpoint.model.pos_emb.device,
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
        f"return {ep.ret:.1f}, score {score_text(ep.score)} ({result.refs.source}), "
        f"{ep.length} steps{' (terminated)' if ep.terminated else ''}, "
        f"{result.ms_per_step:.0f} ms/step -> {path}",
        highlight=False,
    )
    if max_steps is not None:
        console.print(f"[yellow]capped at {max_steps} steps: not comparable to full-length scores")
    if recorder is not None and recorder.written:
        console.print(f"video -> {video} ({recorder.frames[0]} frames)", highlight=False)


def _mean_se(mean: float | None, se: float | None) -> str:
    return score_text(mean) + ("" if mean is None or se is None else f" ± {se:.1f}")


def eval_table(rows: list[tuple[str, EvalResult]]) -> Table:
    """The `trajplan eval` summary of (run name, EvalResult) rows, readable at 80 columns:
    long run names fold, numbers never wrap, reference scores and caps go in the caption; a
    success column (share of episodes that reached the goal) when the env reports it (mazes)."""
    from rich.table import Table

    envs = sorted({r.gym_id for _, r in rows})
    summaries = [result.summary() for _, result in rows]
    success = any(s["success_rate"] is not None for s in summaries)  # goal envs: mazes
    table = Table(title=f"trajplan eval: {', '.join(envs)}", caption_justify="left")
    table.add_column("run", overflow="fold")
    for col in ("episodes", "return", "score", *(["success"] if success else []), "ms/step"):
        table.add_column(col, justify="right", no_wrap=True)
    refs, capped = {}, set()
    for (name, result), s in zip(rows, summaries, strict=True):
        refs.setdefault(s["reference"], []).append(name)
        score = _mean_se(s["score_mean"], s["score_stderr"])
        if not s["comparable"]:
            capped.add(result.episode_steps)
            score += "*"
        ret = _mean_se(s["return_mean"], s["return_stderr"])
        rate = s["success_rate"]
        cells = [f"{100 * rate:.0f}%" if rate is not None else "-"] if success else []
        table.add_row(name, str(s["episodes"]), ret, score, *cells, f"{s['ms_per_step']:.0f}")
    if len(refs) == 1:
        caption = f"score: normalized with reference scores from {next(iter(refs))}"
    else:
        caption = "reference scores: " + "; ".join(f"{', '.join(n)}: {r}" for r, n in refs.items())
    if capped:
        steps = ", ".join(str(c) for c in sorted(capped))
        caption += f". * episodes capped at {steps} steps: not comparable to full-length scores"
    table.caption = caption
    return table


def _check_planning_given(run_dirs: list, planning: PlanOptions) -> None:
    """Planning flags (--critic, --prior, --beam-width, ..., --set plan.*) mean nothing to a
    policy run (BC, IQL): refused when no run given plans (they were silently ignored), as
    --action-noise is on a TT run."""
    from trajplan.cli.options import PLAN_FLAGS
    from trajplan.runs.load import run_kind

    given = [f"--{flag.replace('_', '-')}" for flag, field, _, _ in PLAN_FLAGS
             if planning.fields.get(field) is not None]  # fmt: skip
    given += [f"--set {s}" for s in planning.sets]
    kinds = {run_kind(d) for d in run_dirs}
    if given and kinds and "tt" not in kinds:
        runs = ", ".join(str(d) for d in run_dirs)
        kind = "/".join(sorted(kinds)).upper()
        one = len(run_dirs) == 1
        what = f"is {'an' if kind == 'IQL' else 'a'} {kind} run, which acts" if one else (
            f"are {kind} runs, which act")  # fmt: skip
        it = "it" if len(given) == 1 else "them"
        raise TrajplanError(
            f"{' '.join(given)}: planning settings, but {runs} {what} without planning: "
            f"drop {it} (or evaluate a TT run)"
        )


@plan_options
def eval_cmd(
    checkpoints: list[str] = typer.Argument(
        None,
        help="Run directories to evaluate (other files are skipped, with a warning: "
        "OUT/seed* also matches a --seeds folder's seed0.log).",
    ),
    checkpoint: list[str] = typer.Option(None, help="A run directory (repeatable)."),
    env: str = typer.Option(None, help="Without checkpoints: the newest run for this env."),
    runs: str = typer.Option("runs", help="Where trained runs live."),
    episodes: int = typer.Option(10, help="Episodes per checkpoint, seeds SEED..SEED+N-1."),
    seed: int = seed_option(0, "First episode seed (env reset and planner)."),
    episode_steps: int = typer.Option(
        None, help="Cap episodes at N steps (quick look: not comparable to full-length scores)."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    threads: int = PLAN_THREADS,
    weights: str = WEIGHTS,
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
    action_noise: float = typer.Option(
        0.0,
        help="BC runs only: add Gaussian noise of this times each action's half range, "
        "seeded per episode. At 0.1 (plan.prior_noise) it plays the candidates a search "
        "with --prior chooses from, picked at random: does the search add to them?",
    ),
    workers: int = typer.Option(
        1,
        help="Processes to split the episodes over (one thread each unless --threads): "
        "the same episodes as one process, about N times faster on N free cores. With "
        "several GPUs (--device auto or cuda), worker k plans on GPU k mod the GPU count.",
    ),
    ray: str = typer.Option(
        None,
        "--ray",
        envvar="RAY_ADDRESS",
        help="Play the --workers episode batches as Ray tasks (pip install 'trajplan\\[ray]'): "
        "auto joins this machine's Ray cluster, ray://HOST:10001 a remote one, local starts "
        "one here. Default: $RAY_ADDRESS. The same episodes as --workers.",
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
    from trajplan.config import check_seed
    from trajplan.envs.video import parse_episodes
    from trajplan.evaluation.evaluate import EvalInterrupted, resolve_run
    from trajplan.evaluation.runner import EvalNotSaved, evaluate_runs, run_paths
    from trajplan.runtime import Stopped

    set_threads(threads)
    check_seed(seed + max(episodes, 1) - 1, "--seed + --episodes - 1 (the last episode's seed)")
    assert planning is not None  # given by @plan_options
    dirs = [*(checkpoints or []), *(checkpoint or [])]
    run_dirs, skipped = run_paths(dirs) if dirs else ([resolve_run(None, env, runs)], [])
    if skipped:  # e.g. OUT/seed* also matches a --seeds folder's seed0.log
        names = ", ".join(str(p) for p in skipped)
        err_console.print(f"[yellow]skipped (not run directories): {names}[/]", highlight=False)
    if not math.isfinite(action_noise):
        raise TrajplanError(f"--action-noise must be >= 0, got {action_noise}")
    _check_planning_given(run_dirs, planning)
    try:
        done = evaluate_runs(
            run_dirs, env=env, episodes=episodes, seed=seed, episode_steps=episode_steps,
            device=device, threads=threads, weights=weights, plan=planning.apply,
            action_noise=action_noise, workers=workers, out=out, video=video,
            video_episodes=parse_episodes(video_episodes, episodes) if video else (),
            progress=progress, ray=ray,
        )  # fmt: skip
    except EvalNotSaved as lost:  # played, but the disk filled up: show the scores at least
        console.print(eval_table([(lost.name, lost.result)]))
        console.print("[yellow]not saved: the table above is all that is left of it[/]")
        raise
    except EvalInterrupted as stop:  # Ctrl-C / SIGTERM: what was played is saved
        if stop.path is not None:
            err_console.print(f"[yellow]interrupted: partial results -> {stop.path}[/]")
        raise typer.Exit(stop.exit_code) from None
    except Stopped as stop:  # SIGTERM while loading or saving: nothing partial to keep
        raise typer.Exit(stop.exit_code) from None
    rows = [(e.name, e.result) for e in done]
    paths = [e.path for e in done]
    videos = [v for e in done for v in e.videos]
    console.print(eval_table(rows))
    for path in paths:
        console.print(f"wrote {path} and {path.with_suffix('.png').name}", highlight=False)
    for path in videos:
        console.print(f"video -> {path}", highlight=False)
