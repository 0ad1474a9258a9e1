"""`evaluate_runs`: the library call behind `trajplan eval`.

Several runs (TT or BC), the same episode seeds for each, one new folder per run with its
eval.json and eval.png (`trajplan.evaluation.evalfiles`), episodes in one process
(`trajplan.evaluation.evaluate.run_episodes`) or split over workers
(`trajplan.evaluation.workers`), videos, and the episodes played so far saved when a
signal stops it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from trajplan.config import ModelConfig, PlanConfig
from trajplan.envs.video import VideoRecorder, check_rendering, prepare_rendering
from trajplan.errors import TrajplanError
from trajplan.evaluation.evalfiles import EvalResult, eval_name, save_eval
from trajplan.evaluation.evaluate import (
    EvalInterrupted,
    check_episode_args,
    resolve_run,
    run_episodes,
)
from trajplan.evaluation.workers import evaluate_run
from trajplan.guards import check_disk
from trajplan.parallel.ray_backend import check_reachable
from trajplan.planner.memory import check_planning
from trajplan.runs.checkpoint import WEIGHT_FILES, read_manifest, weights_path
from trajplan.runs.load import check_noise, load_run, run_kind
from trajplan.runtime import check_writable, sigterm_as_interrupt, unique_dir
from trajplan.threads import PLAN_THREADS, torch_threads


class EvalNotSaved(TrajplanError):
    """An evaluation that was played but could not be written (disk full); `result` holds
    its episodes, so they can still be shown (`trajplan eval` prints their table)."""

    def __init__(self, message: str, name: str, result: EvalResult) -> None:
        super().__init__(message)
        self.name, self.result = name, result


@dataclass
class Evaluated:
    """One run's evaluation as `evaluate_runs` saved it."""

    name: str  # the run's folder name
    result: EvalResult
    path: Path  # its eval.json
    videos: list[Path]


def evaluate_runs(
    paths: Sequence[str | Path],
    *,
    env: str | None = None,
    episodes: int = 10,
    seed: int = 0,
    episode_steps: int | None = None,
    device: str = "auto",
    threads: int | None = PLAN_THREADS,
    weights: str = "last",
    plan: Callable[[PlanConfig], PlanConfig] | None = None,
    action_noise: float = 0.0,
    workers: int = 1,
    out: str | Path | None = None,
    video: str | Path | None = None,
    video_episodes: Sequence[int] = (0,),
    progress: bool = True,
    ray: str | None = None,
) -> list[Evaluated]:
    """Evaluate runs (TT or BC directories) on the same episode seeds and save each: what
    `trajplan eval` does. Returns one `Evaluated` per run, in order.

    plan: a TT run's settings from its own (e.g. the CLI's overrides); workers > 1 splits
    the episodes over processes (`trajplan.evaluation.workers`), ray=ADDRESS over Ray
    tasks (`trajplan.parallel.ray_backend`); out: parent of the new
    folders (default RUN/eval); video: DIR/RUN/seedS.mp4 of `video_episodes` (indices;
    ignored without `video`); threads: torch's CPU threads per process (1, the CLI's
    default: planning's tiny ops run fastest on one; None: torch's own setting).
    Everything that can fail cheaply fails before the first episode, and every run gets
    a new folder (evaluations never overwrite). Ctrl-C or SIGTERM saves the episodes
    played so far, marked interrupted, and raises `EvalInterrupted` with `.path` set.
    """
    _check_options(episodes, episode_steps, workers, video, action_noise, ray)
    runs = [Path(p) for p in paths]
    bases = [p.parent if p.is_file() else p for p in runs]  # RUN/best.safetensors -> RUN
    if weights != "last":  # RUN -> RUN/best.safetensors, RUN/best_eval.safetensors
        runs = [weights_path(p, weights) if p.is_dir() else p for p in runs]
    plans = [_plan_of(b, plan) if run_kind(b) == "tt" else None for b in bases]
    if action_noise and any(p is not None for p in plans):
        raise TrajplanError(
            "--action-noise is for policy runs (bc, iql); a TT run's prior: plan.prior_noise"
        )
    names = [eval_name(episodes, seed, p, episode_steps, action_noise) for p in plans]
    _check_room(bases, plans, out, episodes, episode_steps, device, workers)
    dests = new_folders(bases, names, out)
    done: list[Evaluated] = []
    try:
        with sigterm_as_interrupt():
            for path, base, dest, plan_cfg in zip(runs, bases, dests, plans, strict=True):
                seeds = range(seed, seed + episodes)
                rec = _recorder(video, base, seed, video_episodes)
                record = weights_record(path, plan_cfg is not None)  # read before it plays
                try:
                    if workers > 1 or ray:  # the same episodes over processes (GPUs, Ray)
                        result = evaluate_run(
                            path, seeds=seeds, env=env, plan_cfg=plan_cfg,
                            episode_steps=episode_steps, workers=workers, threads=threads or 1,
                            device=device, progress=progress, action_noise=action_noise,
                            ray=ray,
                        )  # fmt: skip
                    else:
                        run = load_run(path, device, plan=plan_cfg, action_noise=action_noise)
                        if rec is not None:
                            check_rendering(env or run.env)
                        with torch_threads(threads):  # the CLI's one thread, by default
                            result = run_episodes(
                                run, env, seeds=seeds, episode_steps=episode_steps,
                                device=device, progress=progress, recorder=rec,
                            )  # fmt: skip
                except EvalInterrupted as stop:  # keep what was played
                    if stop.result.episodes:
                        stop.path = _save(stop.result, dest, base, record)
                    raise
                saved = _save(result, dest, base, record)
                done.append(Evaluated(base.name, result, saved, rec.written if rec else []))
    finally:
        for dest in dests:  # folders of evaluations that never ran
            if dest.is_dir() and not any(dest.iterdir()):
                dest.rmdir()
    return done


def _recorder(
    video: str | Path | None, base: Path, seed: int, episodes: Sequence[int]
) -> VideoRecorder | None:
    """The videos of a run's chosen episodes, DIR/RUN/seedS.mp4; None without a folder
    (then the episodes chosen mean nothing)."""
    if video is None:
        return None
    return VideoRecorder({i: Path(video) / base.name / f"seed{seed + i}.mp4" for i in episodes})


def _check_room(
    bases: Sequence[Path],
    plans: Sequence[PlanConfig | None],
    out: str | Path | None,
    episodes: int,
    episode_steps: int | None,
    device: str,
    workers: int,
) -> None:
    """Memory and disk for every run's evaluation, before the first episode (guards)."""
    models = [read_manifest(b)[0].model if p else None for b, p in zip(bases, plans, strict=True)]
    folders = [Path(out) if out else b / "eval" for b in bases]
    check_eval_room(folders, models, plans, episodes, episode_steps, device, workers)


def _save(result: EvalResult, dest: Path, base: Path, record: tuple) -> Path:
    """eval.json and eval.png of a run's evaluation, with the weights it evaluated."""
    result.checkpoint = result.checkpoint or str(base)
    result.weights_file, result.step = record
    try:
        return save_eval(result, dest, base / "metrics.jsonl")
    except TrajplanError as exc:  # disk full after all: the CLI still shows the scores
        raise EvalNotSaved(str(exc), base.name, result) from None


def run_paths(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """(runs, skipped): what `trajplan eval` evaluates of the paths it is given. A run is a
    directory or a TT run's .safetensors file; other files (a `--seeds` folder's seed0.log
    and seeds-config.yaml, matched by `OUT/seed*`) are skipped. A path that does not exist,
    or nothing left to evaluate, is an error."""
    runs, skipped = [], []
    for item in paths:
        p = resolve_run(item, None, ".")  # it must exist
        (runs if p.is_dir() or p.suffix == ".safetensors" else skipped).append(p)
    if not runs:
        names = ", ".join(str(p) for p in skipped[:3])
        raise TrajplanError(f"no run directory among {names}: give run directories")
    return runs, skipped


def weights_record(path: Path, tt: bool) -> tuple[str | None, int | None]:
    """(weights file, its optimizer step) of what a TT run evaluated: the step stored in the
    file itself, so a checkpoint written meanwhile cannot mislead; (None, None) for others."""
    if not tt:
        return None, None
    file = path if path.is_file() else path / WEIGHT_FILES["last"]
    try:
        from safetensors import safe_open

        with safe_open(str(file), framework="numpy") as f:
            step = (f.metadata() or {}).get("step")
    except Exception:  # unreadable now: the evaluation itself has read it
        step = None
    return str(file), int(step) if step is not None and str(step).isdigit() else None


def _plan_of(run_dir: Path, plan: Callable[[PlanConfig], PlanConfig] | None) -> PlanConfig:
    """A TT run's plan config with the caller's changes (read now: bad ones fail early)."""
    cfg = read_manifest(run_dir)[0].plan
    return plan(cfg) if plan is not None else cfg


def new_folders(bases: Sequence[Path], names: Sequence[str], out: str | Path | None) -> list[Path]:
    """A new folder per run: RUN/eval/NAME, or OUT/RUN-NAME (runs of the same name, A/run
    and B/run, told apart by their parent's name)."""
    if out is None:
        return [unique_dir(b / "eval", n) for b, n in zip(bases, names, strict=True)]
    runs = [b.name for b in bases]
    labels = [b.name if runs.count(b.name) == 1 else f"{b.parent.name}_{b.name}" for b in bases]
    return [unique_dir(Path(out), f"{lb}-{n}") for lb, n in zip(labels, names, strict=True)]


def _check_options(
    episodes: int,
    episode_steps: int | None,
    workers: int,
    video: str | Path | None,
    action_noise: float,
    ray: str | None = None,
) -> None:
    """The options' own values, before anything is loaded (rendering is set up here)."""
    if ray and video:
        raise TrajplanError("--ray runs episodes in other processes: use it without --video")
    if ray:
        check_reachable(ray)  # before any folder is made
    check_episode_args(episodes, episode_steps)
    if workers < 1:
        raise TrajplanError(f"--workers must be at least 1, got {workers}")
    if workers > 1 and video is not None:
        raise TrajplanError("--workers > 1 splits episodes over processes: use it without --video")
    check_noise(action_noise)
    if video is not None:
        prepare_rendering()
        check_writable(video, "video folder")  # before planning, not after


def check_eval_room(
    folders: Sequence[Path],
    models: Sequence[ModelConfig | None],
    plans: Sequence[PlanConfig | None],
    episodes: int,
    episode_steps: int | None,
    device: str = "cpu",
    workers: int = 1,
) -> None:
    """Before an evaluation plays: memory for each run's episodes (`check_planning`) and
    disk for its eval.json in its folder (full-length episodes: 1000 steps)."""
    for folder, model, plan in zip(folders, models, plans, strict=True):
        check_planning(model, plan, episodes, device, workers)
        size = eval_bytes(episodes, episode_steps or 1000)
        largest = max(size - 2**19, 2**19)  # eval.json or eval.png
        check_disk(folder, size, largest, f"the evaluation of {episodes:,} episodes")


def eval_bytes(episodes: int, steps: int) -> int:
    """eval.json of `episodes` episodes of at most `steps` steps (three numbers a step,
    indented: ~90 bytes), plus eval.png."""
    return episodes * (steps * 90 + 1024) + 2**19
