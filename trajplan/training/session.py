"""What one training run is made of and where it stands, before any step is taken.

`TrainingRun` builds a run from its config and prepared data: the model (seeded by
train.seed), AdamW and the token-based schedule (trajplan.training.optim), the epoch and
step counts, the manifest that config.json records, and the Saver (trajplan.training.saving).
`TrainingRun.setup` adds what starting a run takes: the config check, the run directory's
lock (rank 0), the data (trajplan.training.prepare) and, on resume, the restored state.pt.

The loop itself is `trajplan.training.loop.Trainer`, a TrainingRun that trains.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path
from typing import Any, TypeVar

import torch

from trajplan.config import RunConfig, check_run_config
from trajplan.guards import check_disk
from trajplan.model.gpt import TrajectoryGPT
from trajplan.runs.checkpoint import note_given_config
from trajplan.runtime import DirLock, seed_everything, signals_held
from trajplan.training.callbacks import Callback
from trajplan.training.optim import LRSchedule, make_optimizer, n_epochs_for
from trajplan.training.prepare import DistInfo, open_run_dir, prepare_run
from trajplan.training.saving import Saver, TrainState, restore
from trajplan.training.steps import Batches

R = TypeVar("R", bound="TrainingRun")


class TrainingRun:
    """One run's model, optimizer, schedule, sizes and counters (build with `setup`)."""

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
        self.batches = Batches.plan(self.windows.n_windows, tc.batch_size, rk.world)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.total_steps = self.n_epochs * self.steps_per_epoch
        if tc.max_steps is not None:
            self.total_steps = min(self.total_steps, tc.max_steps)
        if tc.fit_schedule:  # the cosine ends with the run, whatever epochs and final_mult
            self.schedule = self.schedule.fitted(
                tc.final_mult * self.steps_per_epoch, self.total_steps
            )
        self.state = TrainState()  # the progress counters (saved and restored)
        self.callbacks: list[Callback] = []  # rank 0, while run() runs: metrics, bar, ...
        self.lock: DirLock | None = None  # held by rank 0 from setup to close
        self.stop_signal: int = signal.SIGINT  # the signal that stopped run(), if one did
        self._t_start = time.perf_counter()
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
        disc = data.discretizer
        self.saver = Saver(
            run_dir, cfg, self.model, self.optimizer, disc, self.manifest, self.elapsed, rk.main
        )

    @classmethod
    def setup(
        cls: type[R],
        cfg: RunConfig,
        out_dir: str | Path | None,
        resume: bool,
        dev: torch.device,
        data: Any,
        download: bool,
        runs_root: str | Path,
        rk: DistInfo,
        allow_data_change: bool = False,
    ) -> R:
        """Check the config, lock the run directory until `close` (rank 0), prepare the
        data (trajplan.training.prepare) and build the run, restored from its state.pt on resume.
        A directory left before its first checkpoint (killed while starting) is started
        over, with --resume (its recorded config) or without."""
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model))  # caller's stays
        check_run_config(cfg)
        lock, given = None, None
        try:
            # the lock and the config given, together: a Ctrl-C between them removed the
            # folder (nothing in it), so `--resume` found nothing to start over from
            with signals_held():
                lock = open_run_dir(out_dir, resume, rk.main)
                given = note_given_config(lock.dir, cfg) if lock is not None else None
            run = prepare_run(
                cfg, out_dir, resume, dev, data, download, runs_root, rk, allow_data_change
            )
            trainer = cls(run.cfg, run.run_dir, run.data, dev, rk, run.manifest)
            if rk.main:  # room for the checkpoints, before the first step (state.pt: 3x)
                n = trainer.model.num_params()
                check_disk(run.run_dir, checkpoint_bytes(n), 12 * n + 2**16, "training")
            if run.state is not None:
                trainer.state = restore(
                    run.state, trainer.model, trainer.optimizer, trainer.manifest, run.run_dir
                )
                trainer.saver.good_step = trainer.state.step
                trainer.saver.best_kept = (trainer.state.best_loss, trainer.state.best_epoch)
        except BaseException as exc:
            if given is not None and not isinstance(exc, KeyboardInterrupt):
                given.unlink(missing_ok=True)  # refused: no trace; stopped: --resume goes on
            if lock is not None:
                lock.release(remove_if_unused=True)
            raise
        if lock is None and rk.main:  # a default run directory: new, named by the time
            lock = open_run_dir(trainer.run_dir, False, rk.main)
        trainer.lock = lock
        return trainer

    def close(self) -> None:
        """Release the run directory's lock (the process's exit does it too)."""
        if self.lock is not None:
            self.lock.release()

    def elapsed(self) -> float:
        """Training wall time over all sessions of this run."""
        return self.state.wall_s + time.perf_counter() - self._t_start

    def set_lr(self, lr: float) -> None:
        """The learning rate of every parameter group, from the next optimizer step on."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def schedule_tokens(self) -> float:
        """Tokens the schedule reads: with fit_schedule and a time limit, the time share of
        the limit counts as that share of the schedule's tokens when it is larger."""
        tc = self.cfg.train
        if not (tc.fit_schedule and tc.time_limit_s):
            return float(self.state.tokens)
        share = (time.perf_counter() - self._t_start) / tc.time_limit_s
        return max(float(self.state.tokens), share * self.schedule.final_tokens)


def checkpoint_bytes(n_params: int) -> int:
    """Disk of a TT run's checkpoints: model, best and best-eval weights and state.pt
    (weights and two Adam moments), float32, plus the small files."""
    return 4 * n_params * 6 + 2**20
