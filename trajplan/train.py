"""Training the TT model (docs/method.md, Model; Optimizer and schedule): CPU, GPU, DDP.

A run passes through four pieces, one module each:

    trajplan.runprep    prepare_run: config vs data vs an old run, data, dims, manifest
    trajplan.optim      AdamW groups, the token-based schedule, the epoch rule
    trajplan.train      Trainer: the loop, TrainState (the saved counters), checkpoints
    trajplan.callbacks  metrics.jsonl, TensorBoard, the progress bar (rank 0 only)

As the reference trainer: batches of 256 windows, reshuffled every epoch, the last partial
batch kept; gradient norm clipped at 1.0; the new learning rate is set *after* each
optimizer step, so the first update runs at the full rate.

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
import math
import signal
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from trajplan.callbacks import Callback, default_callbacks
from trajplan.checkpoint import (
    BEST_FILE,
    FORMAT,
    is_dead_end,
    now_iso,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_manifest,
)
from trajplan.config import RunConfig
from trajplan.errors import TrajplanError
from trajplan.model import TrajectoryGPT, check_model_config
from trajplan.optim import LRSchedule, make_optimizer, n_epochs_for
from trajplan.runprep import DistInfo, check_train_config, init_distributed, prepare_run
from trajplan.runtime import (
    DirLock,
    Stopped,
    remove_orphaned_tmp,
    seed_everything,
)

KINDS = ("obs", "act", "rew", "val")  # token kinds of the per-kind losses in metrics


# -- the loop's pure functions ----------------------------------------------------------------


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the windows in one epoch: a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the dropout draws of one optimizer step on one rank."""
    return ((seed * 1_000_003 + rank) * 1_000_000_007 + step) % (2**63)


def target_token_counts(windows: Any, chunk: int = 8192) -> torch.Tensor:
    """[n_windows] int64 on CPU: non-stop target tokens of every window (the schedule's unit)."""
    counts = torch.empty(windows.n_windows, dtype=torch.int64)
    for start in range(0, windows.n_windows, chunk):
        idx = torch.arange(start, min(start + chunk, windows.n_windows))
        _, y, _ = windows.get_batch(idx)
        counts[start : start + len(idx)] = (y != windows.stop_token).sum(1).cpu()
    return counts


# -- signals --------------------------------------------------------------------


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
                f"[yellow]stopped at step {trainer.state.step}: checkpoint saved; continue with "
                f"trajplan train --resume --out {trainer.run_dir}[/]",
                highlight=False,
            )
        raise Stopped(trainer.stop_signal)
    return trainer.run_dir


@dataclass
class TrainState:
    """The progress counters of a run: saved in state.pt under these names, restored from
    it on resume (one list of fields for both)."""

    step: int = 0  # optimizer steps over the whole run
    epoch: int = 0
    batch: int = 0  # steps done in the current epoch
    tokens: int = 0  # non-stop target tokens seen: the schedule's unit
    wall_s: float = 0.0  # training time of earlier sessions (saved: up to the checkpoint)
    epoch_loss_sum: float = 0.0  # the partial epoch (for best.safetensors)
    epoch_batches: int = 0
    best_loss: float = math.inf
    best_epoch: int = -1
    # step of the weights in best.safetensors: the best epoch's end, or the first
    # checkpoint while no epoch has ended (then best_loss is null and best_epoch -1)
    best_step: int | None = None
    last_loss: float | None = None

    def saved(self, wall_s: float) -> dict[str, Any]:
        """The fields for state.pt, with the run's training time up to now."""
        return {**dataclasses.asdict(self), "tokens": int(self.tokens), "wall_s": wall_s}

    @classmethod
    def from_saved(cls, state: dict[str, Any]) -> TrainState:
        """From a state.pt (older ones lack the optional fields); KeyError if one is missing."""
        return cls(
            **{
                f.name: state.get(f.name) if f.name in _OPTIONAL_STATE else state[f.name]
                for f in dataclasses.fields(cls)
            }
        )


_OPTIONAL_STATE = ("best_step", "last_loss")  # absent from state.pt files of older runs


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
        self.state = TrainState()  # the progress counters (saved and restored)
        self.callbacks: list[Callback] = []  # rank 0, while run() runs: metrics, bar, ...
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
            run = prepare_run(
                cfg, out_dir, resume, dev, data, download, runs_root, rk, allow_data_change
            )
            trainer = cls(run.cfg, run.run_dir, run.data, dev, rk, run.manifest)
            if run.state is not None:
                trainer.restore(run.state)
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

    def close(self) -> None:
        """Release the run directory's lock (the process's exit does it too)."""
        if self.lock is not None:
            self.lock.release()

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a state.pt (weights, optimizer, counters, RNG)."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.state = TrainState.from_saved(state)
            self._good_step = self.state.step
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
            f"training diverged at step {self.state.step} ({what}): stopped without saving, "
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
            "step": self.state.step,
            "epoch": self.state.epoch,
            "tokens": int(self.state.tokens),
            "wall_s": round(self.elapsed(), 3),
            "last_loss": self.state.last_loss,
            "best_loss": None if math.isinf(self.state.best_loss) else self.state.best_loss,
            "best_epoch": self.state.best_epoch,
            "best_step": self.state.best_step,
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
            is_best, self.state.best_step = True, self.state.step  # best.safetensors: these weights
        info = self._info(status)
        state = {
            "format": FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self.state.saved(self.elapsed()),
            "created": self.manifest["created"],
            "rng": rng_state(),
        }
        try:
            save_checkpoint(
                self.run_dir, self.model, self.cfg, info, self.data.discretizer, state, is_best
            )
        except TrajplanError as exc:  # disk full, ...: nothing of this checkpoint was renamed
            raise TrajplanError(f"{exc}; {self._kept()}") from None
        self._last_save = (self.state.step, status)
        self._good_step = self.state.step
        self._t_saved = time.perf_counter()

    # -- the loop ----------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Training wall time over all sessions of this run."""
        return self.state.wall_s + time.perf_counter() - self._t_start

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
            return float(self.state.tokens)
        share = (time.perf_counter() - self._t_start) / tc.time_limit_s
        return max(float(self.state.tokens), share * self.schedule.final_tokens)

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

    def run(self, progress: bool = True, callbacks: Sequence[Callback] = ()) -> bool:
        """Train until the last epoch, max_steps or time_limit_s; True if a signal (Ctrl-C,
        SIGTERM) stopped it (its number is in `stop_signal`). `callbacks` run after the
        default ones (metrics.jsonl, TensorBoard, progress bar), on rank 0 only."""
        tc, rk = self.cfg.train, self.rk
        self._t_start = time.perf_counter()
        if self.state.step >= self.total_steps or self.state.epoch >= self.n_epochs:
            return False  # nothing left to do (a finished run resumed without a new limit)
        st = self.state
        lr = self.schedule(st.tokens) if st.step > 0 else tc.lr  # first update: full rate
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
        if rk.main:  # the other ranks write nothing
            defaults = default_callbacks(self.run_dir, st.step, self.total_steps, progress)
            self.callbacks = [*defaults, *callbacks]
        stop = _StopFlag(rk.world == 1)
        self._t_saved = time.perf_counter()
        try:
            status = self._loop(net, stop)
            if self._last_save != (st.step, status):  # max_steps, time limit or a signal
                if status != "interrupted":
                    self._log_validation()
                self.save(status)
        finally:
            for callback in reversed(self.callbacks):
                callback.close()
            self.callbacks = []
            stop.close()
        if rk.world > 1:
            dist.barrier()
        self.stop_signal = stop.requested or signal.SIGINT
        return status == "interrupted"

    def _save_due(self) -> bool:
        """train.save_every_min has passed since the last checkpoint (a kill -9 loses less)."""
        minutes = self.cfg.train.save_every_min
        return minutes is not None and time.perf_counter() - self._t_saved >= 60 * minutes

    def _loop(self, net: nn.Module, stop: _StopFlag) -> str:
        """The epochs and steps; returns the status: "interrupted" (a signal asked to stop),
        "time_limit" or "finished" (last epoch or max_steps)."""
        tc, rk, w, st = self.cfg.train, self.rk, self.windows, self.state
        use_amp = self.dev.type == "cuda" and tc.amp
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else nullcontext()
        log_loss = torch.zeros((), device=self.dev)  # summed on the device, read when logged
        ep_loss = torch.tensor(st.epoch_loss_sum, device=self.dev)
        log_n, log_tokens, t_log = 0, 0, time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        while st.epoch < self.n_epochs and st.step < self.total_steps:
            perm = epoch_permutation(w.n_windows, tc.seed, st.epoch)
            pad = self.shard_len * rk.world - w.n_windows  # wrap around (DistributedSampler)
            grid = torch.cat([perm, perm[:pad]]).view(self.shard_len, rk.world)
            while st.batch < self.steps_per_epoch and st.step < self.total_steps:
                a = st.batch * self.per_rank
                rows = grid[a : a + self.per_rank]  # [b, world] window ids of this step
                x, y, mask = w.get_batch(rows[:, rk.rank].to(self.dev))  # [b, block] each
                torch.manual_seed(step_seed(tc.seed, rk.rank, st.step))  # dropout draws
                with autocast:
                    logits, loss = net(x, y, mask)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
                self.optimizer.step()
                # as the reference: the rate for the *next* step, from the tokens seen
                st.tokens += int(self._counts[rows.reshape(-1)].sum())
                lr = self.schedule(self._schedule_tokens())
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                st.step += 1
                st.batch += 1
                st.epoch_batches += 1
                for callback in self.callbacks:
                    callback.on_step(st.step)
                log_loss += loss.detach()
                ep_loss += loss.detach()
                log_n += 1
                log_tokens += x.numel() * rk.world
                out_of_time = False
                if st.step % tc.log_every == 0 or st.step == self.total_steps:
                    speed = log_tokens / max(time.perf_counter() - t_log, 1e-9)
                    kinds = self.model.loss_by_kind(logits.detach(), y, mask)  # this batch
                    loss_mean = self._mean_over_ranks(log_loss, log_n)
                    self._log(loss_mean, lr, speed, kinds)
                    log_loss.zero_()
                    log_n, log_tokens, t_log = 0, 0, time.perf_counter()
                    out_of_time = self._out_of_time()
                if stop.requested or out_of_time:
                    if st.batch == self.steps_per_epoch:
                        self._end_epoch(ep_loss, lr)
                    else:
                        st.epoch_loss_sum = float(ep_loss)  # the partial epoch, for resuming
                    if stop.requested:
                        return "interrupted"
                    done = st.epoch >= self.n_epochs or st.step >= self.total_steps
                    return "finished" if done else "time_limit"
                if self._save_due() and st.batch < self.steps_per_epoch:
                    st.epoch_loss_sum = float(ep_loss)  # a mid-epoch checkpoint, by the clock
                    self.save("running")
            if st.batch < self.steps_per_epoch:  # max_steps inside the epoch
                st.epoch_loss_sum = float(ep_loss)
                return "finished"
            self._end_epoch(ep_loss, lr)
        return "finished"

    def _emit(self, record: dict[str, Any]) -> None:
        """Hand a metrics line to the callbacks (none on ranks other than 0)."""
        for callback in self.callbacks:
            callback.on_record(record)

    def _log(self, loss: float, lr: float, speed: float, kinds: torch.Tensor) -> None:
        """One "train" metrics line (loss by kind: the last batch)."""
        self._check_finite("mean loss", loss)
        self.state.last_loss = loss
        self._emit(
            {
                "kind": "train",
                "step": self.state.step,
                "epoch": self.state.epoch,
                "loss": loss,
                **{f"loss_{k}": round(float(v), 5) for k, v in zip(KINDS, kinds, strict=True)},
                "lr": lr,
                "tokens": int(self.state.tokens),
                "tokens_per_s": round(speed, 1),
                "wall_s": round(self.elapsed(), 3),
            }
        )

    def _log_validation(self) -> None:
        val = self.validate()
        if val is not None:
            self.last_val = val
            self._emit({"kind": "val", "step": self.state.step, "epoch": self.state.epoch, **val})

    def _end_epoch(self, ep_loss: torch.Tensor, lr: float) -> None:
        """Epoch mean loss (decides best.safetensors), metrics line, checkpoint when due."""
        mean = self._mean_over_ranks(ep_loss, self.state.epoch_batches)
        self._check_finite("epoch loss", mean)
        is_best = mean < self.state.best_loss
        if is_best:
            self.state.best_loss, self.state.best_epoch = mean, self.state.epoch
        self._emit(
            {
                "kind": "epoch",
                "step": self.state.step,
                "epoch": self.state.epoch,
                "loss": mean,
                "lr": lr,
                "tokens": int(self.state.tokens),
                "wall_s": round(self.elapsed(), 3),
            }
        )
        self.state.epoch += 1
        self.state.batch, self.state.epoch_batches, self.state.epoch_loss_sum = 0, 0, 0.0
        ep_loss.zero_()
        last = self.state.epoch >= self.n_epochs or self.state.step >= self.total_steps
        if last or self.state.epoch % self.cfg.train.val_every == 0:
            self._log_validation()
        if self.state.epoch >= self.n_epochs or self.state.step >= self.total_steps:
            self.save("finished", is_best)
        elif self.state.epoch % self.cfg.train.save_every == 0 or self._save_due():
            self.save("running", is_best)
