"""Evaluate a run over several worker processes: the episodes split, the results one table.

On a CPU one process's cost per episode does not fall with batching, so the lever is the
other cores. `evaluate_run(..., workers=k)` deals the episode seeds round-robin to k child
processes (`trajplan.parallel.procs`; one intra-op thread each by default), every worker loads the
run and plays its episodes with `trajplan.evaluation.evaluate.run_episodes`, and the episodes
come back in seed order; with `ray=ADDRESS` the k batches run as Ray tasks instead
(`trajplan.parallel.ray_backend`), on one machine or a cluster.
On a CUDA device with several GPUs, worker k plans on GPU k mod n_gpus (`worker_devices`);
otherwise workers plan on the CPU.
Because every episode samples from its own seeded generator (the planner's batched == alone
property), the result equals a single-process evaluation of the same seeds, episode for
episode. Ctrl-C or SIGTERM reaches every worker once; each returns the episodes it played,
and they are raised, marked interrupted, in `EvalInterrupted` (`evaluate_runs` saves them).
A parent killed with kill -9 takes its workers with it. Without a terminal, a line is
printed per finished episode.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from trajplan.config import PlanConfig
from trajplan.configs.convert import from_dict, to_dict
from trajplan.envs.rollout import StepInfo
from trajplan.errors import TrajplanError
from trajplan.evaluation.evalfiles import EvalResult
from trajplan.evaluation.evaluate import EvalInterrupted, run_episodes
from trajplan.parallel.procs import Child, Children, report
from trajplan.parallel.ray_backend import run_on_ray
from trajplan.progress import Progress
from trajplan.runs.load import load_run
from trajplan.runtime import Stopped


def _worker(
    run_dir: str,
    env: str | None,
    seeds: list[int],
    plan: dict[str, Any] | None,
    episode_steps: int | None,
    threads: int,
    device: str = "cpu",
    action_noise: float = 0.0,
) -> EvalResult:
    """One worker's episodes; stopped by a signal, the episodes played so far (interrupted).
    Every env step is reported to the parent: (episodes stepped, [(seed, return)] ended)."""
    torch.set_num_threads(threads)
    cfg = from_dict(PlanConfig, plan, "plan") if plan is not None else None
    run = load_run(run_dir, device, plan=cfg, action_noise=action_noise)

    def on_step(info: StepInfo) -> None:
        rows = zip(info.seeds, info.returns, info.done, strict=True)
        ended = [(s, float(r)) for s, r, d in rows if d]
        report((len(info.seeds), ended))

    try:
        return run_episodes(
            run, env, seeds=seeds, episode_steps=episode_steps, progress=False, on_step=on_step
        )  # fmt: skip
    except EvalInterrupted as stop:
        return stop.result


def default_workers() -> int:
    """CPU cores this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def worker_devices(device: str, workers: int, n_gpus: int) -> list[str]:
    """The device of each worker: GPU k mod n_gpus when `device` means CUDA and GPUs exist
    (auto, cuda), the named GPU for cuda:N, else the CPU for all."""
    if device.startswith("cuda:"):
        return [device] * workers
    if device in ("auto", "cuda") and n_gpus > 0:
        return [f"cuda:{k % n_gpus}" for k in range(workers)]
    if device == "cuda":
        raise TrajplanError("device 'cuda' requested but CUDA is not available here")
    return ["cpu"] * workers


def evaluate_run(
    run_dir: str | Path,
    *,
    seeds: Sequence[int],
    env: str | None = None,
    plan_cfg: PlanConfig | None = None,
    episode_steps: int | None = None,
    workers: int = 1,
    threads: int = 1,
    device: str = "auto",
    progress: bool = True,
    action_noise: float = 0.0,
    ray: str | None = None,
) -> EvalResult:
    """Evaluate a TT or BC run directory on `seeds`; with workers > 1, over that many
    processes of `threads` threads each, one GPU each where there are several (the same
    episodes as one process). action_noise: for a BC run (`evaluate.run_episodes`).
    ray: a Ray address (`trajplan.parallel.ray_backend`): the same `workers` batches as Ray tasks.
    A signal stops every worker; the episodes played are raised in `EvalInterrupted`."""
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds) or not seeds:
        raise TrajplanError(f"episode seeds must be distinct and at least one, got {seeds}")
    if workers < 1 or threads < 1:
        raise TrajplanError(f"--workers and --threads must be at least 1, got {workers}/{threads}")
    workers = min(workers, len(seeds))
    plan = None if plan_cfg is None else to_dict(plan_cfg)
    if workers == 1 and ray is None:
        run = load_run(run_dir, device, plan=plan_cfg, action_noise=action_noise)
        return run_episodes(
            run, env, seeds=seeds, episode_steps=episode_steps, progress=progress
        )  # fmt: skip
    chunks = [seeds[k::workers] for k in range(workers)]
    devices = worker_devices(device, workers, torch.cuda.device_count())
    tasks = [
        (str(Path(run_dir).absolute()), env, c, plan, episode_steps, threads, d, action_noise)
        for c, d in zip(chunks, devices, strict=True)
    ]
    t0 = time.perf_counter()
    if ray is not None:
        results, stop = run_on_ray(_worker, tasks, ray, cpus=threads)
        parts = [r for r in results if r is not None]
    else:
        base = Path(run_dir).parent if Path(run_dir).is_file() else Path(run_dir)
        parts, stop = _in_processes(tasks, len(seeds), progress, base.name)
    if not parts:  # stopped before any worker had played a step
        raise Stopped(stop or signal.SIGINT)
    by_seed = {e.seed: e for p in parts for e in p.episodes}
    result = dataclasses.replace(
        parts[0],
        episodes=[by_seed[s] for s in seeds if s in by_seed],
        wall_s=time.perf_counter() - t0,
        env_steps=sum(p.env_steps for p in parts),
        interrupted=stop is not None or any(p.interrupted for p in parts),
    )
    if stop is not None:  # every episode played is kept, marked interrupted
        raise EvalInterrupted(result, stop)
    return result


def _in_processes(
    tasks: list[tuple], n_episodes: int, progress: bool, name: str = ""
) -> tuple[list[EvalResult], int | None]:
    """Run the workers as child processes (`trajplan.parallel.procs`): (their results, the signal
    that stopped them or None). A failed worker stops the others and is one error. `name`
    (the run's) heads the progress and each episode's line."""
    steps, done, playing = 0, 0, set()
    run = f"{name}, " if name else ""
    what = f"planning on {len(tasks)} workers" + (f" ({name})" if name else "")
    bar = Progress(what, n_episodes, enabled=progress)

    def on_event(child: Child, event: tuple[int, list[tuple[int, float]]]) -> None:
        nonlocal steps, done
        stepped, finished = event
        steps += stepped
        if stepped:
            playing.add(id(child))
        for seed, ret in finished:
            done += 1
            if bar.plain and progress:  # no terminal: a line per episode
                print(f"episode seed {seed}: return {ret:.1f} ({run}{done}/{n_episodes} done)",
                      file=bar.console.file, flush=True)  # fmt: skip
        bar.update(completed=done, info=f"{steps:,} env steps, {len(playing)} playing")

    failed: Child | None = None
    ended: list[Child] = []
    kids = Children(on_event)
    try:
        with kids:
            for k, task in enumerate(tasks):
                kids.call(f"worker {k + 1}/{len(tasks)}", _worker, *task)
            while kids.running:
                for child in kids.poll():
                    ended.append(child)
                    if child.error is not None and failed is None and kids.stop is None:
                        failed = child
                        kids.stop_all(signal.SIGTERM)
    finally:
        bar.close(failed=failed is not None or kids.stop is not None)
    if failed is not None:
        raise TrajplanError(f"evaluation {failed.name} failed: {failed.error}")
    return [c.result for c in ended if c.result is not None], kids.stop
