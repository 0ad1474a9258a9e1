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
and the others start, all with the settings given: as for a single `train --resume`, only
loop settings (--max-steps, epochs, ...: LOOP_FIELDS) may differ from a seed's run, and
they reach every seed alike; any other difference refuses the command before a seed starts.
Under torchrun, the seeds run one after another, each with DDP.

The children run through `trajplan.parallel.procs.Children`: Ctrl-C or SIGTERM reaches each child
once, every running seed checkpoints (status interrupted, resumable with --resume), no new
seed starts, and the parent prints one line per seed (its status and step) and exits 130
or 143; a parent killed with kill -9 takes its children with it (they checkpoint too).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import yaml

from trajplan.config import RunConfig
from trajplan.configs.convert import to_dict
from trajplan.errors import TrajplanError
from trajplan.parallel.procs import STOP_SIGNALS, Children, python_command
from trajplan.parallel.ray_backend import check_reachable, run_command, run_on_ray
from trajplan.runs.checkpoint import is_dead_end, read_manifest
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
    """Before any training: without resume, no seed's directory may exist yet, unless a
    killed start left it with nothing to lose (`is_dead_end`)."""
    if resume:
        return
    dirs = [seed_dir(out, s) for s in seeds]
    taken = [str(d) for d in dirs if d.exists() and not is_dead_end(d)]
    if taken:
        raise TrajplanError(
            f"{taken[0]} already exists: use --resume to continue these seeds, or another --out"
        )


def with_seed(cfg: RunConfig, seed: int) -> RunConfig:
    """cfg for one seed of the group (train.seed set)."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))


def check_resumed_seeds(cfg: RunConfig, out: str | Path, seeds: Sequence[int]) -> None:
    """Before any seed starts: every seed that goes on (its run has a config.json) must
    take `cfg` as a single `train --resume` would (`resume_config`: loop fields may change,
    nothing else), else one TrajplanError for the whole command."""
    from trajplan.runs.checkpoint import CONFIG_FILE as RUN_CONFIG  # config.json
    from trajplan.training.prepare import resume_config

    for s in seeds:
        run_dir = seed_dir(out, s)
        if not (run_dir / RUN_CONFIG).is_file():
            continue  # a new seed, or a dead end that starts over with cfg
        saved, _ = read_manifest(run_dir)
        try:
            resume_config(saved, with_seed(cfg, s), run_dir)
        except TrajplanError as exc:
            raise TrajplanError(
                f"{exc}: no seed was started; resume with the seeds' own settings (only "
                "loop settings such as --max-steps or epochs may change), or use another --out"
            ) from None


class ChildArgs(NamedTuple):
    """What every seed's child process (or Ray task) is started with."""

    out: Path  # absolute: a Ray task runs in the folder where its cluster started
    config: Path  # OUT/seeds-config.yaml, the seeds' config
    resume: bool
    device: str
    allow_data_change: bool  # train --allow-data-change, passed on to every child


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
    ray: str | None = None,
    allow_data_change: bool = False,
) -> list[Path]:
    """Train cfg once per seed; returns the run directories in seed order.

    train_one(cfg, run_dir, resume) trains one run in this process (jobs == 1); jobs > 1
    runs child processes instead, ray=ADDRESS one Ray task per seed
    (`trajplan.parallel.ray_backend`; Ray decides how many run at once). See the module
    docstring.
    """
    if jobs < 1:
        raise TrajplanError(f"--jobs must be at least 1, got {jobs}")
    check_seed_dirs(out, seeds, resume)
    if resume:
        check_resumed_seeds(cfg, out, seeds)
    if ray is not None:
        check_reachable(ray)  # before any folder is made
    Path(out).mkdir(parents=True, exist_ok=True)
    if jobs == 1 and ray is None:
        dirs = []
        for i, s in enumerate(seeds):
            run_dir = seed_dir(out, s)
            log(f"seed {s} ({i + 1}/{len(seeds)}): {run_dir}")
            dirs.append(train_one(with_seed(cfg, s), run_dir, resume and run_dir.exists()))
        return dirs
    out = Path(out).absolute()  # a Ray task runs in the folder where its cluster started
    config = atomic_write(out / CONFIG_FILE, lambda p: p.write_text(yaml.safe_dump(to_dict(cfg))))
    args = ChildArgs(out, config, resume, device, allow_data_change)
    if ray is not None:
        failed, stop = _train_on_ray(args, list(seeds), ray, log)
        pending: list[int] = []
    else:
        failed, stop, pending = _train_in_processes(args, list(seeds), jobs, log)
    if stop is not None:
        for s in seeds:
            log(_stopped_line(out, s, s in pending))
        log("continue them: the same command with --resume")
        raise Stopped(stop)
    if failed:
        raise TrajplanError(f"seeds {', '.join(map(str, failed))} failed: see OUT/seed<S>.log")
    return [seed_dir(out, s) for s in seeds]


def _command(args: ChildArgs, s: int, gpu: int | None) -> tuple[list[str], dict[str, str]]:
    """The child command that trains seed s (and the changes to its environment): on GPU
    `gpu` when given, else on `device` with one CPU thread."""
    out, config, resume, device = args.out, args.config, args.resume, args.device
    run_dir = seed_dir(out, s)
    cmd = python_command("trajplan", "train", "--seed", str(s), "--out", str(run_dir))
    goes_on = resume and run_dir.exists() and not is_dead_end(run_dir)  # a dead end restarts
    # one that goes on takes the seeds' settings as an in-process seed does: the loop
    # fields (--max-steps, ...) reach it, and anything else that differs is refused
    cmd += ["--resume", "--resume-with", str(config)] if goes_on else ["--config", str(config)]
    if args.allow_data_change:  # as the in-process seeds are told
        cmd.append("--allow-data-change")
    if gpu is not None:  # one device per child
        return [*cmd, "--device", "cuda", "--no-progress"], {"CUDA_VISIBLE_DEVICES": str(gpu)}
    return [*cmd, "--device", device, "--threads", "1", "--no-progress"], {}


def _train_in_processes(
    args: ChildArgs, seeds: list[int], jobs: int, log: Callable[[str], None]
) -> tuple[list[int], int | None, list[int]]:
    """Up to `jobs` seeds at once as child processes: (failed seeds, the signal that stopped
    them or None, the seeds never started)."""
    import torch

    out, device = args.out, args.device
    gpus = torch.cuda.device_count() if device != "cpu" else 0
    pending, failed = list(seeds), []
    slots, slot_of = list(range(jobs)), {}
    with Children() as kids:
        while (pending and kids.stop is None) or kids.running:
            while pending and slots and kids.stop is None:
                slot, s = slots.pop(0), pending.pop(0)
                cmd, env = _command(args, s, slot % gpus if gpus > 1 else None)
                slot_of[s] = slot
                kids.command(str(s), cmd, log=out / f"seed{s}.log", env={**os.environ, **env})
                log(f"seed {s}: started in a child process, output in {out}/seed{s}.log")
            for child in kids.poll(0.5):
                s = int(child.name)
                slots.append(slot_of[s])
                if child.error is None and not child.stopped:
                    log(f"seed {s}: done")
                elif child.error is not None:
                    failed.append(s)
                    log(f"seed {s}: failed ({child.error}), see {out}/seed{s}.log")
    return failed, kids.stop, pending


def _train_on_ray(
    args: ChildArgs, seeds: list[int], ray: str, log: Callable[[str], None]
) -> tuple[list[int], int | None]:
    """One Ray task per seed (a GPU each when the device is CUDA): (failed seeds, the
    signal that stopped them or None)."""
    out, device = args.out, args.device
    tasks = [(_command(args, s, None)[0], str(out / f"seed{s}.log"), None) for s in seeds]
    log(f"seeds {', '.join(map(str, seeds))}: one Ray task each, output in {out}/seed<S>.log")
    codes, stop = run_on_ray(run_command, tasks, ray, gpus=1 if device.startswith("cuda") else 0)
    failed = []
    for s, code in zip(seeds, codes, strict=True):
        if code == 0:
            log(f"seed {s}: done")
        elif code is not None and code - 128 not in STOP_SIGNALS:
            failed.append(s)
            log(f"seed {s}: failed (exit code {code}), see {out}/seed{s}.log")
    return failed, stop


def _stopped_line(out: Path, seed: int, not_started: bool) -> str:
    """What a stop left of one seed: its status and step, from its config.json."""
    if not_started:
        return f"seed {seed}: not started"
    try:
        _, doc = read_manifest(seed_dir(out, seed))
    except TrajplanError:
        return f"seed {seed}: stopped before its first step"
    return f"seed {seed}: {doc.get('status')} at step {doc.get('step')}"
