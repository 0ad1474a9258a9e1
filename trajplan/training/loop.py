"""Training the TT model (docs/method.md, Model; Optimizer and schedule): CPU, GPU, DDP.

A run passes through these pieces, one module each:

    trajplan.training.prepare    open_run_dir, prepare_run: config vs data vs an old run, data, dims
    trajplan.training.session    TrainingRun: model, optimizer, schedule, sizes, manifest; `setup`
                                 (config check, lock, data, restore on resume)
    trajplan.training.optim      AdamW groups, the token-based schedule, the epoch rule
    trajplan.training.loop       `train` and the Trainer: the session and the loop (this module)
    trajplan.training.steps      the step's parts: batches, dropout seeds, DDP wrap, validation loss
    trajplan.training.saving     TrainState (the saved counters), when and what to
                                 checkpoint, resume
    trajplan.training.callbacks  metrics.jsonl, TensorBoard, W&B, the progress bar (rank 0 only)
    trajplan.training.live_eval  evaluation during training (train.eval_every > 0),
                                 best-eval weights

One training step, top to bottom in `Trainer._loop`: this rank's rows of the epoch's
permutation, forward and backward, gradient clipping, the optimizer step, the next learning
rate from the tokens seen, the callbacks; every log_every steps a "train" metrics line, at
an epoch's end `_end_epoch` (epoch line, validation, a checkpoint when due). `Trainer` is a
`TrainingRun` (trajplan.training.session: what the run is made of) that adds the session
start (`run`), the loop and its metrics lines; the loop stays one method so that a step
reads in one piece.

As the reference trainer: batches of 256 windows, reshuffled every epoch, the last partial
batch kept; gradient norm clipped at 1.0; the new learning rate is set *after* each
optimizer step, so the first update runs at the full rate.

Quick runs: `train.max_steps` (a total over the run) and `train.time_limit_s` (wall time of
one session, checked every log_every steps) stop early with a checkpoint.

Batches are gathered by tensor indexing (`WindowDataset.get_batch`) from a permutation drawn
from (seed, epoch); dropout is reseeded from (seed, rank, step) before every step. So a run
is a pure function of its config, and a resumed run continues exactly (tests check it).

Precision (train.amp, `uses_bf16`): bf16 autocast on CUDA and on CPUs with native bf16
(AVX512_BF16 or AMX), fp32 elsewhere; fp32 weights, optimizer and loss. On CUDA also TF32
matmuls and optional torch.compile. Under torchrun (WORLD_SIZE > 1)
every rank trains on a disjoint shard of each epoch's permutation (global batch = batch_size)
with DistributedDataParallel (NCCL on GPU, gloo on CPU); only rank 0 writes files and shows
progress.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from trajplan.config import RunConfig
from trajplan.configs.convert import to_dict
from trajplan.runs.checkpoint import GIVEN_FILE, write_manifest
from trajplan.runtime import StopFlag, Stopped
from trajplan.training.callbacks import Callback, check_loggers, default_callbacks
from trajplan.training.live_eval import PeriodicEval
from trajplan.training.prepare import init_distributed
from trajplan.training.session import TrainingRun
from trajplan.training.steps import (
    KINDS,
    RunningLoss,
    any_rank,
    mean_over_ranks,
    step_seed,
    target_token_counts,
    training_net,
    validation_loss,
)


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
    loggers: Sequence[str] = ("jsonl",),
) -> Path:
    """Train a TT model as configured; returns the run directory (see trajplan.runs.checkpoint).

    out_dir: the run directory (default runs/<env>-<level>-<time>); it must not exist
    unless resume=True, which continues from its last checkpoint with the run's own config
    (only LOOP_FIELDS and `plan` may differ, e.g. a larger train.max_steps). data: a
    PreparedData to train on instead of loading cfg.dataset (tests, benchmarks).
    allow_data_change: resume even if the dataset's fingerprint differs from the run's.
    loggers: besides metrics.jsonl, "tensorboard" and/or "wandb" (trajplan.training.callbacks).
    Under torchrun this runs on every rank; only rank 0 writes. Ctrl-C or SIGTERM finishes
    the current step, checkpoints (status "interrupted") and raises `Stopped`.
    """
    loggers = check_loggers(loggers)
    rank_info, dev = init_distributed(device)
    trainer = None
    try:
        trainer = Trainer.setup(
            cfg, out_dir, resume, dev, data, download, runs_root, rank_info, allow_data_change
        )
        interrupted = trainer.run(progress, loggers=loggers)
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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware: AVX512_BF16 or AMX (x86). Elsewhere
    (AVX2, AVX512 without BF16, ARM as torch reports it) bf16 is emulated and slower."""
    get_caps = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.6
    if get_caps is not None:
        caps = get_caps()
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def uses_bf16(dev: torch.device, amp: bool) -> bool:
    """train.amp's rule: bf16 autocast on CUDA and on CPUs with native bf16, fp32 elsewhere."""
    if not amp:
        return False
    return dev.type == "cuda" or (dev.type == "cpu" and cpu_has_native_bf16())


def training_autocast(dev: torch.device, amp: bool) -> Any:
    """The forward's precision (see `uses_bf16`): bf16 autocast, or a no-op context.

    The weights, their gradients, AdamW's state and the loss (cross-entropy on fp32 logits)
    stay fp32 either way; under autocast the matrix products run in bf16 (on CPU also the
    blocked attention of long windows, trajplan.model.kernels). Same seed, device and
    setting give the same run; bf16 and fp32 runs differ from the first step (rounding), by
    about as much as two fp32 seeds do (docs/benchmarks.md, "bf16 autocast on CPU").
    """
    if not uses_bf16(dev, amp):
        return nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16)


class Trainer(TrainingRun):
    """One training run's session and loop (build with `setup`, trajplan.training.session)."""

    def run(
        self,
        progress: bool = True,
        callbacks: Sequence[Callback] = (),
        loggers: Sequence[str] = ("jsonl",),
    ) -> bool:
        """Train until the last epoch, max_steps or time_limit_s; True if a signal (Ctrl-C,
        SIGTERM) stopped it (its number is in `stop_signal`). `callbacks` run after the
        default ones (metrics.jsonl, the chosen loggers, the progress bar, the evaluation
        during training when train.eval_every > 0), on rank 0 only."""
        tc, rk, st = self.cfg.train, self.rk, self.state
        self._t_start = time.perf_counter()
        if st.step >= self.total_steps or st.epoch >= self.n_epochs:
            return False  # nothing left to do (a finished run resumed without a new limit)
        self.set_lr(self.schedule(st.tokens) if st.step > 0 else tc.lr)  # first: full rate
        self.windows.to(self.dev)
        self._counts = target_token_counts(self.windows)  # [W] CPU: schedule tokens per window
        net = training_net(self.model, self.dev, rk.world, tc.compile)
        if rk.main:  # the other ranks write nothing
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.saver.good_step is None:  # config.json from the start: resumable
                write_manifest(self.run_dir, self.cfg, self.saver.info("starting", st))
                (self.run_dir / GIVEN_FILE).unlink(missing_ok=True)  # config.json says more
            defaults = default_callbacks(
                self.run_dir, st.step, self.total_steps, progress, loggers, to_dict(self.cfg)
            )
            if tc.eval_every > 0:
                defaults.append(PeriodicEval(self))
            self.callbacks = [*defaults, *callbacks]
        stop = StopFlag(rk.world == 1)
        self.saver.clock.saved()  # the clock counts from the loop's start
        try:
            status = self._loop(net, stop)
            if self.saver.last != (st.step, status):  # max_steps, time limit or a signal
                if status != "interrupted":
                    self._log_validation()
                self.saver.save(status, st)
        finally:
            for callback in reversed(self.callbacks):
                callback.close()
            self.callbacks = []
            stop.close()
        if rk.world > 1:
            dist.barrier()
        self.stop_signal = stop.requested or signal.SIGINT
        return status == "interrupted"

    def _loop(self, net: nn.Module, stop: StopFlag) -> str:
        """The epochs and steps; returns the status: "interrupted" (a signal asked to stop),
        "time_limit" or "finished" (last epoch or max_steps)."""
        tc, rk, w, st = self.cfg.train, self.rk, self.windows, self.state
        autocast = training_autocast(self.dev, tc.amp)  # the loss stays fp32 (model.loss)
        running = RunningLoss(self.dev)  # between two "train" lines
        running.loss += st.log_loss_sum  # a resumed run goes on with the checkpoint's
        running.n = st.log_steps  # partial interval: its next line is the same line
        self.saver.running = running
        ep_loss = torch.tensor(st.epoch_loss_sum, device=self.dev)
        lr = self.optimizer.param_groups[0]["lr"]
        while st.epoch < self.n_epochs and st.step < self.total_steps:
            grid = self.batches.grid(tc.seed, st.epoch)
            while st.batch < self.steps_per_epoch and st.step < self.total_steps:
                rows = self.batches.rows(grid, st.batch)  # [b, world] window ids of this step
                idx = rows[:, rk.rank].to(self.dev)
                x, y, mask = w.get_batch(idx)  # [b, block] each
                goal = w.goal_batch(idx)  # [b, g] hindsight goals, or None
                torch.manual_seed(step_seed(tc.seed, rk.rank, st.step))  # dropout draws
                with autocast:
                    logits, loss = net(x, y, mask, goal)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
                self.optimizer.step()
                # as the reference: the rate for the *next* step, from the tokens seen
                st.tokens += int(self._counts[rows.reshape(-1)].sum())
                lr = self.schedule(self.schedule_tokens())
                self.set_lr(lr)
                st.step += 1
                st.batch += 1
                st.epoch_batches += 1
                for callback in self.callbacks:
                    callback.on_step(st.step)
                running.add(loss, x.numel() * rk.world)
                ep_loss += loss.detach()
                out_of_time = False
                if st.step % tc.log_every == 0 or st.step == self.total_steps:
                    mean, speed = running.read(rk.world)
                    kinds = self.model.loss_by_kind(logits.detach(), y, mask)  # this batch
                    self._log(mean, lr, speed, kinds)
                    if st.step % tc.log_every == 0:  # the last step's line ends no interval
                        running.reset()
                    limit = tc.time_limit_s  # per session: a resumed run gets it afresh
                    late = limit is not None and time.perf_counter() - self._t_start >= limit
                    out_of_time = any_rank(late, rk.world, self.dev)
                if stop.requested or out_of_time:
                    if st.batch == self.steps_per_epoch:
                        self._end_epoch(ep_loss, lr)
                    else:
                        st.epoch_loss_sum = float(ep_loss)  # the partial epoch, for resuming
                    if stop.requested:
                        return "interrupted"
                    done = st.epoch >= self.n_epochs or st.step >= self.total_steps
                    return "finished" if done else "time_limit"
                if self.saver.clock.by_clock() and st.batch < self.steps_per_epoch:
                    st.epoch_loss_sum = float(ep_loss)  # a mid-epoch checkpoint, by the clock
                    self.saver.save("running", st)
            if st.batch < self.steps_per_epoch:  # max_steps inside the epoch
                st.epoch_loss_sum = float(ep_loss)
                return "finished"
            self._end_epoch(ep_loss, lr)
        return "finished"

    def emit(self, kind: str, **fields: Any) -> None:
        """Hand a metrics line to the callbacks (none on ranks other than 0)."""
        record = {"kind": kind, "step": self.state.step, "epoch": self.state.epoch, **fields}
        for callback in self.callbacks:
            callback.on_record(record)

    def _check_finite(self, what: str, value: float) -> None:
        if not math.isfinite(value):
            raise self.saver.diverged(f"{what} {value}", self.state.step)

    def _log(self, loss: float, lr: float, speed: float, kinds: torch.Tensor) -> None:
        """One "train" metrics line (loss by kind: the last batch)."""
        self._check_finite("mean loss", loss)
        self.state.last_loss = loss
        by_kind = {f"loss_{k}": round(float(v), 5) for k, v in zip(KINDS, kinds, strict=True)}
        tokens, wall_s = int(self.state.tokens), round(self.elapsed(), 3)
        self.emit(
            "train",
            loss=loss,
            **by_kind,
            lr=lr,
            tokens=tokens,
            tokens_per_s=round(speed, 1),
            wall_s=wall_s,
        )

    def _log_validation(self) -> None:
        vw = self.data.val_windows
        if vw is not None:
            self.emit("val", **validation_loss(self.model, vw, self.dev, self.batches.per_rank))

    def _end_epoch(self, ep_loss: torch.Tensor, lr: float) -> None:
        """Epoch mean loss (decides best.safetensors), metrics line, checkpoint when due."""
        st = self.state
        mean = mean_over_ranks(ep_loss, st.epoch_batches, self.rk.world)
        self._check_finite("epoch loss", mean)
        self.emit("epoch", loss=mean, lr=lr, tokens=int(st.tokens), wall_s=round(self.elapsed(), 3))
        is_best = st.end_epoch(mean)
        ep_loss.zero_()
        last = st.epoch >= self.n_epochs or st.step >= self.total_steps
        if last or st.epoch % self.cfg.train.val_every == 0:
            self._log_validation()
        self.saver.after_epoch(st, is_best, last)
