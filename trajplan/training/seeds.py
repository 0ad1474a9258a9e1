"""Train one config under several seeds: OUT/seed<S>/, each a complete run directory.

    trajplan train --config cpu-recipe --dataset ID --seeds 0,1,2 --out runs/x
    trajplan eval --checkpoint runs/x/seed0 runs/x/seed1 runs/x/seed2
    trajplan aggregate runs/x/seed*/eval    # per-seed scores, mean, IQM with bootstrap CIs

By default the seeds train one after another in this process (on a CPU that is fastest:
one run already uses the cores it is given). With jobs > 1, that many child processes run
at once (`python -m trajplan train --config OUT/seeds-config.yaml --seed S --out
OUT/seedS`), each pinned to its own GPU when several are visible (CUDA_VISIBLE_DEVICES),
else to one CPU thread; their output goes to OUT/seedS.log. With resume, a seed whose
directory exists continues from its checkpoint (a finished one has nothing left to do)
and the others start. Under torchrun, the seeds run one after another, each with DDP.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from trajplan.config import RunConfig, to_dict
from trajplan.errors import TrajplanError
from trajplan.runtime import Stopped, atomic_write

CONFIG_FILE = "seeds-config.yaml"


def parse_seeds(text: str) -> list[int]:
    """ "0,1,2" or "0-4" (or a mix: "0-2,7") -> distinct seeds in the given order."""
    seeds: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, sep, hi = part.partition("-")
            if sep and lo:
                seeds += range(int(lo), int(hi) + 1)
            else:
                seeds.append(int(part))
    except ValueError:
        raise TrajplanError(f"--seeds takes integers like 0,1,2 or 0-4, got {text!r}") from None
    seeds = list(dict.fromkeys(seeds))
    if not seeds:
        raise TrajplanError(f"--seeds names no seed: {text!r}")
    return seeds


def seed_dir(out: str | Path, seed: int) -> Path:
    return Path(out) / f"seed{seed}"


def check_seed_dirs(out: str | Path, seeds: Sequence[int], resume: bool) -> None:
    """Before any training: without resume, no seed's directory may exist yet."""
    if resume:
        return
    taken = [str(seed_dir(out, s)) for s in seeds if seed_dir(out, s).exists()]
    if taken:
        raise TrajplanError(
            f"{taken[0]} already exists: use --resume to continue these seeds, or another --out"
        )


def train_seeds(
    cfg: RunConfig,
    out: str | Path,
    seeds: Sequence[int],
    train_one: Callable[[RunConfig, Path, bool], Path],
    *,
    resume: bool = False,
    jobs: int = 1,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Train cfg once per seed; returns the run directories in seed order.

    train_one(cfg, run_dir, resume) trains one run in this process (jobs == 1); jobs > 1
    runs child processes instead (see the module docstring).
    """
    if jobs < 1:
        raise TrajplanError(f"--jobs must be at least 1, got {jobs}")
    check_seed_dirs(out, seeds, resume)
    Path(out).mkdir(parents=True, exist_ok=True)
    if jobs == 1:
        dirs = []
        for i, s in enumerate(seeds):
            run_dir = seed_dir(out, s)
            log(f"seed {s} ({i + 1}/{len(seeds)}): {run_dir}")
            one = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=s))
            dirs.append(train_one(one, run_dir, resume and run_dir.exists()))
        return dirs
    return _train_in_processes(cfg, Path(out), list(seeds), resume, jobs, device, log)


def _train_in_processes(
    cfg: RunConfig,
    out: Path,
    seeds: list[int],
    resume: bool,
    jobs: int,
    device: str,
    log: Callable[[str], None],
) -> list[Path]:
    import torch

    config = atomic_write(out / CONFIG_FILE, lambda p: p.write_text(yaml.safe_dump(to_dict(cfg))))
    gpus = torch.cuda.device_count() if device != "cpu" else 0
    pending, failed = list(seeds), []
    running: dict[int, tuple[subprocess.Popen, int]] = {}
    slots = list(range(jobs))

    def start(s: int, slot: int) -> subprocess.Popen:
        run_dir = seed_dir(out, s)
        cmd = [sys.executable, "-m", "trajplan", "train", "--seed", str(s), "--out", str(run_dir)]
        cmd += ["--resume"] if resume and run_dir.exists() else ["--config", str(config)]
        env = dict(os.environ)
        if gpus > 1:  # one device per child
            env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
            cmd += ["--device", "cuda"]
        else:
            cmd += ["--device", device, "--threads", "1"]
        log(f"seed {s}: started in a child process, output in {run_dir}.log")
        with open(out / f"seed{s}.log", "w") as f:
            return subprocess.Popen(
                [*cmd, "--no-progress"], stdout=f, stderr=subprocess.STDOUT, env=env
            )

    try:
        while pending or running:
            while pending and slots:
                slot = slots.pop(0)
                s = pending.pop(0)
                running[s] = (start(s, slot), slot)
            time.sleep(0.5)
            for s, (proc, slot) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[s]
                slots.append(slot)
                if proc.returncode == 0:
                    log(f"seed {s}: done")
                else:
                    failed.append(s)
                    log(f"seed {s}: failed with exit code {proc.returncode} (see its log)")
    except KeyboardInterrupt:  # children checkpoint on SIGTERM and exit
        for proc, _ in running.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in running.values():
            proc.wait()
        raise Stopped(signal.SIGINT) from None
    if failed:
        raise TrajplanError(f"seeds {', '.join(map(str, failed))} failed: see OUT/seed<S>.log")
    return [seed_dir(out, s) for s in seeds]
