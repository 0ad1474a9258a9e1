"""Training the TT model (docs/method.md, Model; Optimizer and schedule): CPU, GPU, DDP.

Faithful to the reference trainer:
- AdamW(lr 6e-4, betas (0.9, 0.95)); weight decay 0.1 on Linear weights and the
  per-dimension head only; gradient norm clipped at 1.0;
- batches of 256 windows, reshuffled every epoch, the last partial batch kept;
- learning rate by tokens seen (non-stop targets): linear warmup over one pass of the data
  (n_windows * block_size tokens), then a cosine to 0.1x at 20 passes that the reference
  never clamps (it rises again after); the new rate is set *after* each optimizer step, so
  the first update runs at the full rate. `train.clamp_schedule` holds 0.1x after the end;
- n_epochs = int(1e6 / n_windows * n_epochs_ref) unless `train.epochs` is given.

Quick runs: `train.max_steps` (a total over the run) and `train.time_limit_s` (wall time of
one session, checked every log_every steps) stop early with a checkpoint.

Batches are gathered by tensor indexing (`WindowDataset.get_batch`) from a permutation drawn
from (seed, epoch); dropout is reseeded from (seed, rank, step) before every step. So a run
is a pure function of its config, and a resumed run continues exactly (tests check it).

On CUDA: bf16 autocast, TF32 matmuls, optional torch.compile. Under torchrun (WORLD_SIZE > 1)
every rank trains on a disjoint shard of each epoch's permutation (global batch = batch_size)
with DistributedDataParallel (NCCL on GPU, gloo on CPU); only rank 0 writes files and shows
progress.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from trajplan.checkpoint import (
    BEST_FILE,
    DISCRETIZER_FILE,
    FORMAT,
    METRICS_FILE,
    has_checkpoint,
    is_dead_end,
    load_train_state,
    now_iso,
    read_manifest,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_manifest,
)
from trajplan.config import RunConfig, TrainConfig, dataset_level, to_dict
from trajplan.errors import TrajplanError
from trajplan.model import TrajectoryGPT, check_model_config
from trajplan.optim import LRSchedule, make_optimizer, n_epochs_for
from trajplan.runtime import (
    DirLock,
    Stopped,
    atomic_write,
    remove_orphaned_tmp,
    resolve_device,
    seed_everything,
)
from trajplan.tokens import Discretizer

# Fields that may change when a run is resumed (they steer the loop, not the result).
KINDS = ("obs", "act", "rew", "val")  # token kinds of the per-kind losses in metrics
LOOP_FIELDS = (
    "epochs",
    "max_steps",
    "time_limit_s",
    "save_every",
    "save_every_min",
    "log_every",
    "compile",
)
DIM_FIELDS = ("obs_dim", "act_dim", "vocab_size", "block_size")


# -- the loop's pure functions ----------------------------------------------------------------


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the windows in one epoch: a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the dropout draws of one optimizer step on one rank."""
    return ((seed * 1_000_003 + rank) * 1_000_000_007 + step) % (2**63)


def check_train_config(cfg: TrainConfig) -> None:
    for name in ("batch_size", "save_every", "log_every", "n_epochs_ref"):
        if getattr(cfg, name) < 1:
            raise TrajplanError(f"train.{name} must be at least 1, got {getattr(cfg, name)}")
    for name in ("epochs", "max_steps"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise TrajplanError(f"train.{name} must be at least 1 (or null), got {value}")
    if cfg.save_every_min is not None and not cfg.save_every_min > 0:
        raise TrajplanError(f"train.save_every_min must be > 0 (or null), got {cfg.save_every_min}")
    for name in ("lr", "grad_clip", "weight_decay"):
        if not math.isfinite(getattr(cfg, name)):
            raise TrajplanError(f"train.{name} must be a finite number, got {getattr(cfg, name)}")
    if cfg.lr <= 0 or cfg.grad_clip <= 0 or cfg.weight_decay < 0:
        raise TrajplanError("train.lr and train.grad_clip must be > 0, weight_decay >= 0")
    if not all(0 <= b < 1 for b in cfg.betas):
        raise TrajplanError(f"train.betas must be in [0, 1), got {list(cfg.betas)}")
    if not 0 < cfg.warmup_mult < cfg.final_mult:
        raise TrajplanError("train.warmup_mult must be > 0 and below train.final_mult")


# -- run setup -------------------------------------------------------------------------------


@dataclass
class DistInfo:
    """Where this process sits in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """Read torchrun's env vars; start NCCL (GPU) or gloo (CPU) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return DistInfo(), dev
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), dev


def resolve_dataset(cfg: RunConfig) -> tuple[str | None, str, int | None]:
    """(env short name or None, dataset id, obs_keep) from cfg.env / cfg.dataset."""
    from trajplan.envs import env_for_dataset, resolve_env

    if cfg.env is None and cfg.dataset is None:
        raise TrajplanError("no env and no dataset: give --env NAME or --dataset ID")
    info = resolve_env(cfg.env) if cfg.env is not None else env_for_dataset(cfg.dataset or "")
    dataset = cfg.dataset or (info.dataset_id if info else None)
    if dataset is None:
        raise TrajplanError(f"env {cfg.env!r} has no default dataset: give --dataset ID")
    return (info.name if info else None), dataset, (info.obs_keep if info else None)


def fill_model_dims(cfg: RunConfig, obs_dim: int, act_dim: int, dataset: str) -> None:
    """Set model dims from the data; a config that states other dims is an error."""
    d = obs_dim + act_dim + 2
    want = {
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "vocab_size": cfg.data.n_bins,
        "block_size": cfg.data.seq_len * d - 1,
    }
    for key, value in want.items():
        given = getattr(cfg.model, key)
        if given not in (0, value):
            raise TrajplanError(
                f"config model.{key} = {given}, but dataset {dataset} with data.n_bins "
                f"{cfg.data.n_bins} and data.seq_len {cfg.data.seq_len} needs {value} "
                "(leave model dims at 0 to take them from the data)"
            )
        setattr(cfg.model, key, value)


def min_train_bytes(cfg: RunConfig, world: int = 1, cpu: bool = True) -> int:
    """A lower bound on the memory of one training process: the [T, T] attention mask, the
    weights with their gradients and AdamW moments, and for one batch the logits (and their
    gradient) and the activations kept for backward (>= 10 floats per token, layer and
    embedding dim; a GPT block keeps about 16). On CPU the attention kernel also keeps the
    causal half of every layer's [T, T] probabilities per head for backward."""
    m = cfg.model
    t, c, d, n = m.block_size, m.n_embd, m.transition_dim, m.vocab_size
    b = math.ceil(cfg.train.batch_size / world)
    params = (n * d + 1) * c + t * c + m.n_layer * 12 * c * c + d * (n + 1) * c
    need = t * t + 16 * params + 4 * b * t * (10 * c * m.n_layer + 2 * (n + 1))
    if cpu:
        need += 4 * b * m.n_head * m.n_layer * t * t // 2
    return need


def available_bytes(dev: torch.device) -> int | None:
    """Free memory of the device (GPU) or available RAM (Linux); None when unknown."""
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(cfg: RunConfig, dev: torch.device, world: int = 1) -> None:
    """Refuse a config that cannot fit, instead of meeting the OOM killer mid-run."""
    need, have = min_train_bytes(cfg, world, dev.type == "cpu"), available_bytes(dev)
    if have is None or need <= have:
        return
    gib = 2.0**30
    raise TrajplanError(
        f"this config needs at least {need / gib:,.1f} GiB to train ({cfg.model.block_size:,} "
        f"tokens per window from data.seq_len {cfg.data.seq_len}, batch {cfg.train.batch_size}"
        f"), {have / gib:,.1f} GiB are free on {dev}: lower data.seq_len or train.batch_size"
    )


def resume_config(saved: RunConfig, given: RunConfig, run_dir: Path) -> RunConfig:
    """The run's own config, with the loop fields (LOOP_FIELDS) and `plan` from `given`.

    Anything else that `given` sets differently is an error: the run would not continue
    the same training. Model dims left at 0 and env/dataset left empty count as unset.
    """
    s, g = to_dict(saved), to_dict(given)
    diffs = []
    for key in ("env", "dataset"):
        if g[key] is not None and g[key] != s[key]:
            diffs.append(f"{key}: run has {s[key]!r}, given {g[key]!r}")
    for section in ("data", "model", "train"):
        for key, value in g[section].items():
            if section == "train" and key in LOOP_FIELDS:
                continue
            if section == "model" and key in DIM_FIELDS and value == 0:
                continue
            if value != s[section][key]:
                diffs.append(f"{section}.{key}: run has {s[section][key]!r}, given {value!r}")
    if diffs:
        raise TrajplanError(
            f"cannot resume {run_dir}: config differs from the run's ({'; '.join(diffs[:3])})"
        )
    merged = dataclasses.replace(saved, plan=dataclasses.replace(given.plan))
    merged.train = dataclasses.replace(
        saved.train, **{k: getattr(given.train, k) for k in LOOP_FIELDS}
    )
    return merged


def data_fingerprint(episodes: Any) -> str:
    """sha256 over the loaded episodes (every array, with its dtype and shape): a changed
    dataset (re-collected, other seed or size) gets another fingerprint."""
    h = hashlib.sha256()
    for name in ("observations", "actions", "rewards", "terminations", "truncations", "lengths"):
        arr = np.ascontiguousarray(getattr(episodes, name))
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.data)
    return "sha256:" + h.hexdigest()


def _check_same_data(
    saved: dict[str, Any] | None,
    fingerprint: str,
    episodes: Any,
    allow_change: bool,
    run_dir: str | Path | None,
) -> None:
    """A resumed run must see the data it was trained on (unless allow_change)."""
    if saved is None or allow_change or saved.get("data_fingerprint") in (None, fingerprint):
        return
    then = (saved.get("n_episodes"), saved.get("n_transitions"))
    now = (episodes.n_episodes, episodes.n_steps)
    size = (
        "same size, other contents"
        if then == now
        else f"{then[0]} episodes / {then[1]} steps then, {now[0]} / {now[1]} now"
    )
    raise TrajplanError(
        f"cannot resume {run_dir}: dataset {episodes.dataset_id} changed since the run began "
        f"({size}): pass --allow-data-change to continue on the new data with the run's "
        "bins, or train a new run"
    )


def default_run_dir(env: str | None, dataset: str, runs_root: str | Path = "runs") -> Path:
    """runs/<env>-<level>-<YYYYmmdd-HHMMSS>."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{env or 'run'}-{dataset_level(dataset)}-{stamp}"
    return Path(runs_root) / name.replace("/", "_")


def target_token_counts(windows: Any, chunk: int = 8192) -> torch.Tensor:
    """[n_windows] int64 on CPU: non-stop target tokens of every window (the schedule's unit)."""
    counts = torch.empty(windows.n_windows, dtype=torch.int64)
    for start in range(0, windows.n_windows, chunk):
        idx = torch.arange(start, min(start + chunk, windows.n_windows))
        _, y, _ = windows.get_batch(idx)
        counts[start : start + len(idx)] = (y != windows.stop_token).sum(1).cpu()
    return counts


# -- progress and metrics --------------------------------------------------------------------


class _Progress:
    """A rich progress bar (rank 0, when asked) with loss, lr, tokens/s and ETA."""

    def __init__(self, enabled: bool, total: int, done: int, title: str) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}  loss {task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}  {task.fields[speed]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.task = self.bar.add_task(
            title, total=total, completed=done, epoch="-", loss="-", lr="-", speed="-"
        )
        self.bar.start()

    def update(self, step: int, **fields: Any) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, **fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _Metrics:
    """metrics.jsonl (+ TensorBoard when installed), written by rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool, keep_until_step: int | None) -> None:
        self.path = run_dir / METRICS_FILE
        self.file = None
        self.tb = None
        if not enabled:
            return
        if keep_until_step is not None and self.path.exists():  # drop lines past the checkpoint
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= keep_until_step:
                        kept.append(line + "\n")
                except json.JSONDecodeError:
                    continue
            atomic_write(self.path, lambda p: p.write_text("".join(kept)))
        self.file = self.path.open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # tensorboard not installed: the JSON lines are enough
            self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            return
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as exc:
            raise TrajplanError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        if self.tb is not None:
            prefix = record.get("kind", "train")
            for key in ("loss", "lr", "tokens_per_s"):
                if record.get(key) is not None:
                    self.tb.add_scalar(f"{prefix}/{key}", record[key], record["step"])

    def close(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError:  # already reported by write (disk full)
                pass
        if self.tb is not None:
            self.tb.close()


class _StopFlag:
    """Ctrl-C or SIGTERM (kill, docker stop, a scheduler's pre-emption) between steps:
    finish the step, checkpoint, then stop. A second signal aborts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool) -> None:
        self.requested: int | None = None  # the signal number once one arrived
        self.previous: dict[int, Any] = {}
        if enabled and threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise Stopped(signum)
        self.requested = signum

    def close(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# -- the loop --------------------------------------------------------------------------------


def train(
    cfg: RunConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    data: Any = None,
    download: bool = False,
    runs_root: str | Path = "runs",
    allow_data_change: bool = False,
) -> Path:
    """Train a TT model as configured; returns the run directory (see trajplan.checkpoint).

    out_dir: the run directory (default runs/<env>-<level>-<time>); it must not exist
    unless resume=True, which continues from its last checkpoint with the run's own config
    (only LOOP_FIELDS and `plan` may differ, e.g. a larger train.max_steps). data: a
    PreparedData to train on instead of loading cfg.dataset (tests, benchmarks).
    allow_data_change: resume even if the dataset's fingerprint differs from the run's.
    Under torchrun this runs on every rank; only rank 0 writes. Ctrl-C or SIGTERM finishes
    the current step, checkpoints (status "interrupted") and raises `Stopped`.
    """
    rank_info, dev = init_distributed(device)
    trainer = None
    try:
        trainer = Trainer.setup(
            cfg, out_dir, resume, dev, data, download, runs_root, rank_info, allow_data_change
        )
        interrupted = trainer.run(progress)
    finally:
        if trainer is not None:
            trainer.close()
        if rank_info.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if interrupted:
        if rank_info.main:
            from rich.console import Console

            Console(stderr=True).print(
                f"[yellow]stopped at step {trainer.step}: checkpoint saved; continue with "
                f"trajplan train --resume --out {trainer.run_dir}[/]",
                highlight=False,
            )
        raise Stopped(trainer.stop_signal)
    return trainer.run_dir


class Trainer:
    """The state of one training run and the loop over it (build with `Trainer.setup`)."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path,
        data: Any,
        dev: torch.device,
        rk: DistInfo,
        manifest: dict[str, Any],
    ) -> None:
        self.cfg, self.run_dir, self.data, self.dev, self.rk = cfg, run_dir, data, dev, rk
        self.windows = data.windows
        tc = cfg.train
        seed_everything(tc.seed)
        self.model = TrajectoryGPT(cfg.model).to(dev)
        self.optimizer = make_optimizer(self.model, tc, dev)
        self.schedule = LRSchedule.for_data(tc, self.windows.n_windows, self.windows.block_size)
        self.n_epochs = n_epochs_for(tc, self.windows.n_windows)
        # batching: the permutation is padded to a multiple of the world size; rank r takes
        # its r-th column, `per_rank` rows per step (the global batch is batch_size)
        self.per_rank = math.ceil(tc.batch_size / rk.world)
        self.shard_len = math.ceil(self.windows.n_windows / rk.world)
        self.steps_per_epoch = math.ceil(self.shard_len / self.per_rank)
        self.total_steps = self.n_epochs * self.steps_per_epoch
        if tc.max_steps is not None:
            self.total_steps = min(self.total_steps, tc.max_steps)
        if tc.fit_schedule:  # the cosine ends with the run
            self.schedule = self.schedule.fitted(
                self.n_epochs * self.steps_per_epoch, self.total_steps
            )
        # progress counters (all restored on resume)
        self.step = self.epoch = self.batch_pos = self.tokens = 0
        self.wall_before = 0.0  # training time of earlier sessions of this run
        self.epoch_loss, self.epoch_batches = 0.0, 0  # partial epoch (for best.safetensors)
        self.best_loss, self.best_epoch = math.inf, -1
        # step of the weights in best.safetensors: the best epoch's end, or the first
        # checkpoint while no epoch has ended (then best_loss is null and best_epoch -1)
        self.best_step: int | None = None
        self.last_loss: float | None = None
        self._last_save: tuple[int, str] | None = None  # (step, status) of the last checkpoint
        self._good_step: int | None = None  # step of the newest checkpoint on disk
        self.lock: DirLock | None = None  # held by rank 0 from setup to close
        self.stop_signal: int = signal.SIGINT  # the signal that stopped run(), if one did
        self._t_start = self._t_saved = time.perf_counter()
        self.manifest = {
            **manifest,
            "n_params": self.model.num_params(),
            "n_epochs": self.n_epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "world_size": rk.world,
            "device": str(dev),
            "torch_version": torch.__version__,
        }

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def setup(
        cls,
        cfg: RunConfig,
        out_dir: str | Path | None,
        resume: bool,
        dev: torch.device,
        data: Any,
        download: bool,
        runs_root: str | Path,
        rk: DistInfo,
        allow_data_change: bool = False,
    ) -> Trainer:
        """Check the run directory and config, prepare the data, build (or restore) a run.

        Rank 0 locks the run directory (runtime.DirLock) until `close`: a second training
        into it fails at once. A directory left before its first checkpoint (killed while
        starting) is started over, with --resume (its recorded config) or without."""
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model))  # caller's stays
        check_train_config(cfg.train)
        check_model_config(cfg.model)
        if resume and out_dir is None:
            raise TrajplanError("--resume needs the run directory (--out DIR)")
        if out_dir is not None and not resume:
            p = Path(out_dir)
            if p.exists() and not p.is_dir():
                raise TrajplanError(f"--out {p} is a file, not a directory")
            if p.is_dir() and any(p.iterdir()) and not is_dead_end(p):
                raise TrajplanError(
                    f"run directory {p} already exists: pass --resume to continue it, "
                    "or choose another --out"
                )
        lock = DirLock(out_dir, "run directory") if out_dir is not None and rk.main else None
        try:
            trainer = cls._build(
                cfg, out_dir, resume, dev, data, download, runs_root, rk, allow_data_change
            )
        except BaseException:
            if lock is not None:
                lock.release(remove_if_unused=True)
            raise
        if lock is None and rk.main:  # a default run directory: new, named by the time
            lock = DirLock(trainer.run_dir, "run directory")
        trainer.lock = lock
        if lock is not None:
            remove_orphaned_tmp(trainer.run_dir)  # left by a process killed mid-write
        return trainer

    @classmethod
    def _build(
        cls,
        cfg: RunConfig,
        out_dir: str | Path | None,
        resume: bool,
        dev: torch.device,
        data: Any,
        download: bool,
        runs_root: str | Path,
        rk: DistInfo,
        allow_data_change: bool,
    ) -> Trainer:
        state, saved_doc, bins = None, None, None
        if resume:
            saved, saved_doc = read_manifest(out_dir)  # type: ignore[arg-type]
            cfg = resume_config(saved, cfg, Path(out_dir))  # type: ignore[arg-type]
            if has_checkpoint(out_dir):  # type: ignore[arg-type]
                state = load_train_state(out_dir)  # type: ignore[arg-type]
                bins = Path(out_dir) / DISCRETIZER_FILE  # type: ignore[arg-type]
            # else: stopped before its first checkpoint: start over with its config

        if data is not None and cfg.dataset is None:
            cfg.dataset = data.episodes.dataset_id
        env_name, dataset_id, obs_keep = resolve_dataset(cfg)
        if data is None:  # every rank prepares the same windows (deterministic)
            from trajplan.data import load_episodes, prepare_episodes

            episodes = load_episodes(dataset_id, download=download, obs_keep=obs_keep)
            fingerprint = data_fingerprint(episodes)
            _check_same_data(saved_doc, fingerprint, episodes, allow_data_change, out_dir)
            # a resumed run keeps its own bins, so its tokens keep their meaning
            disc = Discretizer.load(bins) if bins is not None and bins.is_file() else None
            data = prepare_episodes(episodes, cfg.data, discretizer=disc)
        else:
            fingerprint = data_fingerprint(data.episodes)
            _check_same_data(saved_doc, fingerprint, data.episodes, allow_data_change, out_dir)
        episodes = data.episodes
        if env_name is None and episodes.env_id:
            from trajplan.envs import env_for_dataset

            info = env_for_dataset(episodes.env_id)
            env_name = info.name if info else episodes.env_id
            _check_env_known(env_name, dataset_id)
        _check_env_matches(env_name, episodes.env_id, dataset_id)
        cfg.env, cfg.dataset = env_name, dataset_id
        fill_model_dims(cfg, data.obs_dim, data.act_dim, dataset_id)
        check_memory(cfg, dev, rk.world)
        w = data.windows
        if (w.block_size, w.transition_dim) != (cfg.model.block_size, cfg.model.transition_dim):
            raise TrajplanError(
                f"prepared windows ({w.block_size} tokens, {w.transition_dim} dims) do not "
                f"match the model ({cfg.model.block_size}, {cfg.model.transition_dim})"
            )

        if out_dir is None:
            run_dir = default_run_dir(env_name, dataset_id, runs_root)
            if rk.world > 1:  # every rank must use rank 0's timestamp
                box = [str(run_dir)]
                dist.broadcast_object_list(box, src=0)
                run_dir = Path(box[0])
        else:
            run_dir = Path(out_dir)
        manifest = {
            "env": env_name,
            "env_id": episodes.env_id,
            "dataset_id": dataset_id,
            "ref_min": episodes.ref_min,
            "ref_max": episodes.ref_max,
            "ref_source": episodes.ref_source,
            "n_windows": w.n_windows,
            "n_transitions": int(episodes.n_steps),
            "n_episodes": int(episodes.n_episodes),
            "data_fingerprint": fingerprint,
            "created": now_iso(),
        }
        trainer = cls(cfg, run_dir, data, dev, rk, manifest)
        if state is not None:
            trainer.restore(state)
        return trainer

    def close(self) -> None:
        """Release the run directory's lock (the process's exit does it too)."""
        if self.lock is not None:
            self.lock.release()

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a state.pt (weights, optimizer, counters, RNG)."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step, self.epoch, self.batch_pos = state["step"], state["epoch"], state["batch"]
            self.tokens, self.wall_before = state["tokens"], state["wall_s"]
            self.epoch_loss, self.epoch_batches = state["epoch_loss_sum"], state["epoch_batches"]
            self.best_loss, self.best_epoch = state["best_loss"], state["best_epoch"]
            self.best_step = state.get("best_step")
            self.last_loss = state.get("last_loss")
            self._good_step = self.step
            self.manifest["created"] = state.get("created", self.manifest["created"])
            set_rng_state(state["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise TrajplanError(f"{self.run_dir}: resume state does not fit ({detail})") from None

    # -- checkpoints -------------------------------------------------------------------------

    def _kept(self) -> str:
        if self._good_step is None:
            return "no checkpoint was written"
        return f"the last good checkpoint (step {self._good_step}) is kept"

    def _diverged(self, what: str) -> TrajplanError:
        """The error that stops a run whose loss or weights are no longer finite."""
        return TrajplanError(
            f"training diverged at step {self.step} ({what}): stopped without saving, "
            f"{self._kept()} in {self.run_dir}; start a new run with a lower train.lr "
            f"(was {self.cfg.train.lr:g})"
        )

    def _check_finite(self, what: str, value: float) -> None:
        if not math.isfinite(value):
            raise self._diverged(f"{what} {value}")

    def _info(self, status: str) -> dict[str, Any]:
        """config.json's fields besides the config: the manifest and the progress."""
        info = {
            **self.manifest,
            "status": status,
            "step": self.step,
            "epoch": self.epoch,
            "tokens": int(self.tokens),
            "wall_s": round(self.elapsed(), 3),
            "last_loss": self.last_loss,
            "best_loss": None if math.isinf(self.best_loss) else self.best_loss,
            "best_epoch": self.best_epoch,
            "best_step": self.best_step,
        }
        if status in ("finished", "time_limit"):
            info["finished"] = now_iso()
        return info

    def save(self, status: str, is_best: bool = False) -> None:
        """One checkpoint (rank 0 only): weights, resume state, then config.json.

        Weights that are not all finite are never saved: the run stops with an error."""
        with torch.no_grad():
            if not all(bool(p.isfinite().all()) for p in self.model.parameters()):
                raise self._diverged("non-finite weights")
        if not self.rk.main:
            return
        if is_best or not (self.run_dir / BEST_FILE).exists():
            is_best, self.best_step = True, self.step  # best.safetensors: these weights
        info = self._info(status)
        state = {
            "format": FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch_pos,
            "tokens": int(self.tokens),
            "wall_s": self.elapsed(),
            "epoch_loss_sum": self.epoch_loss,
            "epoch_batches": self.epoch_batches,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "best_step": self.best_step,
            "last_loss": self.last_loss,
            "created": self.manifest["created"],
            "rng": rng_state(),
        }
        try:
            save_checkpoint(
                self.run_dir, self.model, self.cfg, info, self.data.discretizer, state, is_best
            )
        except TrajplanError as exc:  # disk full, ...: nothing of this checkpoint was renamed
            raise TrajplanError(f"{exc}; {self._kept()}") from None
        self._last_save = (self.step, status)
        self._good_step = self.step
        self._t_saved = time.perf_counter()

    # -- the loop ----------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Training wall time over all sessions of this run."""
        return self.wall_before + time.perf_counter() - self._t_start

    def _mean_over_ranks(self, total: torch.Tensor, n: int) -> float:
        pair = torch.stack([total.detach().float(), torch.tensor(float(n), device=self.dev)])
        if self.rk.world > 1:
            dist.all_reduce(pair)
        return float(pair[0] / pair[1].clamp(min=1))

    def _schedule_tokens(self) -> float:
        """Tokens the schedule reads: with fit_schedule and a time limit, the time share of
        the limit counts as that share of the schedule's tokens when it is larger."""
        tc = self.cfg.train
        if not (tc.fit_schedule and tc.time_limit_s):
            return float(self.tokens)
        share = (time.perf_counter() - self._t_start) / tc.time_limit_s
        return max(float(self.tokens), share * self.schedule.final_tokens)

    @torch.no_grad()
    def validate(self, max_windows: int = 8192) -> dict[str, float] | None:
        """Loss on the held-out windows (evenly spaced, at most max_windows), no dropout:
        the weighted training objective and the cross-entropy by token kind."""
        vw = self.data.val_windows
        if vw is None:
            return None
        vw.to(self.dev)
        idx = torch.linspace(0, vw.n_windows - 1, min(vw.n_windows, max_windows)).long()
        was_training = self.model.training
        self.model.eval()
        total, kinds, n = 0.0, torch.zeros(4), 0
        for chunk in idx.split(self.per_rank):
            x, y, mask = vw.get_batch(chunk.to(self.dev))
            logits, loss = self.model(x, y, mask)
            total += float(loss) * len(chunk)
            kinds += self.model.loss_by_kind(logits, y, mask).cpu() * len(chunk)
            n += len(chunk)
        self.model.train(was_training)
        out = {"val_loss": total / n}
        out.update({f"val_{k}": float(v) / n for k, v in zip(KINDS, kinds, strict=True)})
        return out

    def _out_of_time(self) -> bool:
        limit = self.cfg.train.time_limit_s  # per session: a resumed run gets it afresh
        out = limit is not None and time.perf_counter() - self._t_start >= limit
        if self.rk.world > 1:  # every rank must stop at the same step
            flag = torch.tensor(float(out), device=self.dev)
            dist.all_reduce(flag)
            out = bool(flag > 0)
        return out

    def run(self, progress: bool = True) -> bool:
        """Train until the last epoch, max_steps or time_limit_s; True if a signal (Ctrl-C,
        SIGTERM) stopped it (its number is in `stop_signal`)."""
        tc, rk = self.cfg.train, self.rk
        self._t_start = time.perf_counter()
        if self.step >= self.total_steps or self.epoch >= self.n_epochs:
            return False  # nothing left to do (a finished run resumed without a new limit)
        lr = self.schedule(self.tokens) if self.step > 0 else tc.lr  # first update: full rate
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.windows.to(self.dev)
        self._counts = target_token_counts(self.windows)  # [W] CPU: schedule tokens per window
        net: nn.Module = self.model
        if rk.world > 1:
            ids = [self.dev.index] if self.dev.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if tc.compile:
            net = torch.compile(net)
        if rk.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self._good_step is None:  # config.json from the start: resumable, fingerprinted
                write_manifest(self.run_dir, self.cfg, self._info("starting"))
        metrics = _Metrics(self.run_dir, rk.main, self.step)  # drops lines past the checkpoint
        stop = _StopFlag(rk.world == 1)
        bar = _Progress(progress and rk.main, self.total_steps, self.step, self.run_dir.name)
        self._t_saved = time.perf_counter()
        try:
            status = self._loop(net, metrics, bar, stop)
            if self._last_save != (self.step, status):  # max_steps, time limit or a signal
                if status != "interrupted":
                    self._log_validation(metrics)
                self.save(status)
        finally:
            bar.close()
            metrics.close()
            stop.close()
        if rk.world > 1:
            dist.barrier()
        self.stop_signal = stop.requested or signal.SIGINT
        return status == "interrupted"

    def _save_due(self) -> bool:
        """train.save_every_min has passed since the last checkpoint (a kill -9 loses less)."""
        minutes = self.cfg.train.save_every_min
        return minutes is not None and time.perf_counter() - self._t_saved >= 60 * minutes

    def _loop(self, net: nn.Module, metrics: _Metrics, bar: _Progress, stop: _StopFlag) -> str:
        """The epochs and steps; returns the status: "interrupted" (a signal asked to stop),
        "time_limit" or "finished" (last epoch or max_steps)."""
        tc, rk, w = self.cfg.train, self.rk, self.windows
        use_amp = self.dev.type == "cuda" and tc.amp
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else nullcontext()
        log_loss = torch.zeros((), device=self.dev)  # summed on the device, read when logged
        ep_loss = torch.tensor(self.epoch_loss, device=self.dev)
        log_n, log_tokens, t_log = 0, 0, time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        while self.epoch < self.n_epochs and self.step < self.total_steps:
            perm = epoch_permutation(w.n_windows, tc.seed, self.epoch)
            pad = self.shard_len * rk.world - w.n_windows  # wrap around (DistributedSampler)
            grid = torch.cat([perm, perm[:pad]]).view(self.shard_len, rk.world)
            while self.batch_pos < self.steps_per_epoch and self.step < self.total_steps:
                a = self.batch_pos * self.per_rank
                rows = grid[a : a + self.per_rank]  # [b, world] window ids of this step
                x, y, mask = w.get_batch(rows[:, rk.rank].to(self.dev))  # [b, block] each
                torch.manual_seed(step_seed(tc.seed, rk.rank, self.step))  # dropout draws
                with autocast:
                    logits, loss = net(x, y, mask)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
                self.optimizer.step()
                # as the reference: the rate for the *next* step, from the tokens seen
                self.tokens += int(self._counts[rows.reshape(-1)].sum())
                lr = self.schedule(self._schedule_tokens())
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.step += 1
                self.batch_pos += 1
                self.epoch_batches += 1
                log_loss += loss.detach()
                ep_loss += loss.detach()
                log_n += 1
                log_tokens += x.numel() * rk.world
                out_of_time = False
                if self.step % tc.log_every == 0 or self.step == self.total_steps:
                    speed = log_tokens / max(time.perf_counter() - t_log, 1e-9)
                    kinds = self.model.loss_by_kind(logits.detach(), y, mask)  # this batch
                    loss_mean = self._mean_over_ranks(log_loss, log_n)
                    self._log(metrics, bar, loss_mean, lr, speed, kinds)
                    log_loss.zero_()
                    log_n, log_tokens, t_log = 0, 0, time.perf_counter()
                    out_of_time = self._out_of_time()
                else:
                    bar.update(self.step)
                if stop.requested or out_of_time:
                    if self.batch_pos == self.steps_per_epoch:
                        self._end_epoch(ep_loss, lr, metrics)
                    else:
                        self.epoch_loss = float(ep_loss)  # the partial epoch, for resuming
                    if stop.requested:
                        return "interrupted"
                    done = self.epoch >= self.n_epochs or self.step >= self.total_steps
                    return "finished" if done else "time_limit"
                if self._save_due() and self.batch_pos < self.steps_per_epoch:
                    self.epoch_loss = float(ep_loss)  # a mid-epoch checkpoint, by the clock
                    self.save("running")
            if self.batch_pos < self.steps_per_epoch:  # max_steps inside the epoch
                self.epoch_loss = float(ep_loss)
                return "finished"
            self._end_epoch(ep_loss, lr, metrics)
        return "finished"

    def _log(
        self,
        metrics: _Metrics,
        bar: _Progress,
        loss: float,
        lr: float,
        speed: float,
        kinds: torch.Tensor,
    ) -> None:
        """One metrics.jsonl line and a progress-bar refresh (loss by kind: the last batch)."""
        self._check_finite("mean loss", loss)
        self.last_loss = loss
        metrics.write(
            {
                "kind": "train",
                "step": self.step,
                "epoch": self.epoch,
                "loss": loss,
                **{f"loss_{k}": round(float(v), 5) for k, v in zip(KINDS, kinds, strict=True)},
                "lr": lr,
                "tokens": int(self.tokens),
                "tokens_per_s": round(speed, 1),
                "wall_s": round(self.elapsed(), 3),
            }
        )
        bar.update(
            self.step, epoch=self.epoch, loss=f"{loss:.4f}", lr=f"{lr:.2e}", speed=f"{speed:,.0f}"
        )

    def _log_validation(self, metrics: _Metrics) -> None:
        val = self.validate()
        if val is not None:
            self.last_val = val
            metrics.write({"kind": "val", "step": self.step, "epoch": self.epoch, **val})

    def _end_epoch(self, ep_loss: torch.Tensor, lr: float, metrics: _Metrics) -> None:
        """Epoch mean loss (decides best.safetensors), metrics line, checkpoint when due."""
        mean = self._mean_over_ranks(ep_loss, self.epoch_batches)
        self._check_finite("epoch loss", mean)
        is_best = mean < self.best_loss
        if is_best:
            self.best_loss, self.best_epoch = mean, self.epoch
        metrics.write(
            {
                "kind": "epoch",
                "step": self.step,
                "epoch": self.epoch,
                "loss": mean,
                "lr": lr,
                "tokens": int(self.tokens),
                "wall_s": round(self.elapsed(), 3),
            }
        )
        self.epoch += 1
        self.batch_pos, self.epoch_batches, self.epoch_loss = 0, 0, 0.0
        ep_loss.zero_()
        last = self.epoch >= self.n_epochs or self.step >= self.total_steps
        if last or self.epoch % self.cfg.train.val_every == 0:
            self._log_validation(metrics)
        if self.epoch >= self.n_epochs or self.step >= self.total_steps:
            self.save("finished", is_best)
        elif self.epoch % self.cfg.train.save_every == 0 or self._save_due():
            self.save("running", is_best)


def _check_env_known(env_name: str, dataset: str) -> None:
    """The env a dataset was recorded in must exist here, or the run could never be
    evaluated: fail now, not after training."""
    from trajplan.envs import resolve_env

    try:
        resolve_env(env_name)
    except TrajplanError:
        raise TrajplanError(
            f"dataset {dataset} was recorded in env {env_name!r}, which is not installed here: "
            "install it, or give --env NAME for the env to plan in"
        ) from None


def _check_env_matches(env_name: str | None, dataset_env: str | None, dataset: str) -> None:
    """The configured env and the env the dataset was recorded in must agree."""
    if env_name is None or dataset_env is None:
        return
    from trajplan.envs import resolve_env

    try:
        a, b = resolve_env(env_name), resolve_env(dataset_env)
    except TrajplanError:
        return
    if a.gym_id.split("-v")[0] != b.gym_id.split("-v")[0]:
        raise TrajplanError(
            f"dataset {dataset} was recorded in {dataset_env}, not {a.gym_id}: "
            "pick a dataset for this env or another --env"
        )
