"""Evaluate a run over several worker processes: the episodes split, the results one table.

On a CPU one process's cost per episode does not fall with batching, so the lever is the
other cores. `evaluate_run(..., workers=k)` deals the episode seeds round-robin to k spawned
processes (one intra-op thread each by default), every worker loads the run and plays its
episodes with `trajplan.evaluation.evaluate.run_episodes`, and the episodes come back in seed order.
On a CUDA device with several GPUs, worker k plans on GPU k mod n_gpus (`worker_devices`);
otherwise workers plan on the CPU.
Because every episode samples from its own seeded generator (the planner's batched == alone
property), the result equals a single-process evaluation of the same seeds, episode for
episode. Ctrl-C cancels the workers that have not finished.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from trajplan.config import PlanConfig, from_dict, to_dict
from trajplan.errors import TrajplanError
from trajplan.evaluation.evalfiles import EvalResult
from trajplan.evaluation.evaluate import EvalInterrupted, run_episodes
from trajplan.runs import load_run


def _worker(
    run_dir: str,
    env: str | None,
    seeds: list[int],
    plan: dict[str, Any] | None,
    episode_steps: int | None,
    threads: int,
    device: str = "cpu",
    action_noise: float = 0.0,
) -> Any:
    torch.set_num_threads(threads)
    cfg = from_dict(PlanConfig, plan, "plan") if plan is not None else None
    run = load_run(run_dir, device, plan=cfg, action_noise=action_noise)
    return run_episodes(run, env, seeds=seeds, episode_steps=episode_steps, progress=False)


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
) -> Any:
    """Evaluate a TT or BC run directory on `seeds`; with workers > 1, over that many
    processes of `threads` threads each, one GPU each where there are several (the same
    episodes as one process). action_noise: for a BC run (`evaluate.run_episodes`)."""
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds) or not seeds:
        raise TrajplanError(f"episode seeds must be distinct and at least one, got {seeds}")
    if workers < 1 or threads < 1:
        raise TrajplanError(f"--workers and --threads must be at least 1, got {workers}/{threads}")
    workers = min(workers, len(seeds))
    plan = None if plan_cfg is None else to_dict(plan_cfg)
    if workers == 1:
        run = load_run(run_dir, device, plan=plan_cfg, action_noise=action_noise)
        return run_episodes(
            run, env, seeds=seeds, episode_steps=episode_steps, progress=progress
        )  # fmt: skip
    chunks = [seeds[k::workers] for k in range(workers)]
    devices = worker_devices(device, workers, torch.cuda.device_count())
    t0 = time.perf_counter()

    def merged(parts: list[EvalResult], interrupted: bool = False) -> EvalResult:
        by_seed = {e.seed: e for p in parts for e in p.episodes}
        return dataclasses.replace(
            parts[0],
            episodes=[by_seed[s] for s in seeds if s in by_seed],
            wall_s=time.perf_counter() - t0,
            env_steps=sum(p.env_steps for p in parts),
            interrupted=interrupted,
        )

    ctx = mp.get_context("spawn")  # no forked torch thread pools
    pool = ProcessPoolExecutor(workers, mp_context=ctx)
    futures = [
        pool.submit(_worker, str(run_dir), env, c, plan, episode_steps, threads, d, action_noise)
        for c, d in zip(chunks, devices, strict=True)
    ]
    try:
        parts: list[EvalResult] = []
        for k, f in enumerate(futures):
            parts.append(f.result())
            if progress:
                print(f"worker {k + 1}/{workers}: {len(chunks[k])} episodes done", flush=True)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM under sigterm_as_interrupt
        done = [f.result() for f in futures if f.done() and not f.cancelled() and not f.exception()]
        for proc in list(getattr(pool, "_processes", {}).values()):  # stop the others now
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        if done:  # the workers that finished: their whole episodes are kept
            raise EvalInterrupted(merged(done, True), getattr(exc, "signum", 2)) from None
        raise
    pool.shutdown()
    return merged(parts)
