"""`trajplan plan` (one episode, live) and `trajplan eval` (N episodes per run, saved):
the commands that plan (trajplan.planner, trajplan.evaluate, trajplan.workers)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import typer

from trajplan.cli.options import (
    THREADS,
    WEIGHTS,
    PlanOptions,
    console,
    err_console,
    plan_options,
    score_text,
    set_threads,
)
from trajplan.errors import TrajplanError

if TYPE_CHECKING:
    from rich.table import Table

    from trajplan.evaluate import EvalResult


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
    threads: int = THREADS,
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

    set_threads(threads)
    run_dir = resolve_run(checkpoint, env, runs)
    if video:
        prepare_rendering()
        check_video_path(video)
    ckpt = load_checkpoint(run_dir, device=device, which=weights)
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
    threads: int = THREADS,
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
    from trajplan.checkpoint import load_checkpoint, read_manifest, weights_path
    from trajplan.evaluate import EvalInterrupted, check_episode_args, resolve_run, run_episodes
    from trajplan.report import eval_name, save_eval
    from trajplan.runtime import Stopped, sigterm_as_interrupt, unique_dir
    from trajplan.video import VideoRecorder, check_rendering, parse_episodes, prepare_rendering
    from trajplan.workers import evaluate_run

    set_threads(threads)
    dirs = [*(checkpoints or []), *(checkpoint or [])]
    run_dirs = [resolve_run(d, None, runs) for d in dirs] or [resolve_run(None, env, runs)]
    filmed = parse_episodes(video_episodes, episodes) if video else []
    if video:
        prepare_rendering()
    assert planning is not None  # given by @plan_options
    # Everything that can fail cheaply fails before the first episode: configs, options,
    # and one new output folder per run (never an old one: evaluations do not overwrite).
    bases = [d.parent if d.is_file() else d for d in run_dirs]  # RUN/best.safetensors -> RUN
    if weights != "last":  # RUN -> RUN/best.safetensors, RUN/best_eval.safetensors
        run_dirs = [weights_path(d, weights) if d.is_dir() else d for d in run_dirs]
    names = [b.name for b in bases]
    plans = [None if is_bc_run(b) else planning.apply(read_manifest(b)[0].plan) for b in bases]
    check_episode_args(episodes, episode_steps)
    if workers < 1:
        raise TrajplanError(f"--workers must be at least 1, got {workers}")
    if action_noise and not all(is_bc_run(b) for b in bases):
        raise TrajplanError("--action-noise is for BC runs (a TT run's prior: plan.prior_noise)")
    if not (math.isfinite(action_noise) and action_noise >= 0):
        raise TrajplanError(f"--action-noise must be >= 0, got {action_noise}")
    if workers > 1 and video:
        raise TrajplanError("--workers > 1 splits episodes over processes: use it without --video")
    dests = []
    for base, plan_cfg in zip(bases, plans, strict=True):
        name = eval_name(episodes, seed, plan_cfg, episode_steps, action_noise)
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
                    if workers > 1:  # the same episodes, split over processes (or GPUs)
                        result = evaluate_run(
                            run_dir, seeds=range(seed, seed + episodes), env=env,
                            plan_cfg=plan_cfg, episode_steps=episode_steps, workers=workers,
                            threads=threads or 1, device=device, progress=progress,
                            action_noise=action_noise,
                        )  # fmt: skip
                    elif is_bc_run(base):  # a BC baseline acts on the same seeds, no planning
                        run = load_bc(base)
                        if rec is not None:
                            check_rendering(env or run.env)
                        result = run_episodes(
                            run, env, n_episodes=episodes, seed=seed,
                            episode_steps=episode_steps, progress=progress, recorder=rec,
                            action_noise=action_noise,
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
