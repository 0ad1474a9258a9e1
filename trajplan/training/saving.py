"""Checkpoints of a training run: what is saved, when, and how a run continues from one.

    TrainState  the progress counters, saved in state.pt next to the weights, the optimizer
                and the RNG state
    Saver       when and what the loop saves: every `train.save_every` epochs, every
                `train.save_every_min` minutes (mid-epoch: a kill -9 loses less; the rule is
                every training's, `trajplan.runs.lifecycle.SaveClock`), and when the loop ends;
                only rank 0 writes, every rank refuses weights that are not finite
    restore     model, optimizer, counters and RNG back from a state.pt (resume): a resumed
                run continues bit-identically

The files themselves (layout, atomic writes, config.json) are `trajplan.runs.checkpoint`'s.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trajplan.config import RunConfig
from trajplan.data.tokens import Discretizer
from trajplan.errors import TrajplanError
from trajplan.model.gpt import TrajectoryGPT
from trajplan.runs.checkpoint import (
    BEST_FILE,
    FORMAT,
    now_iso,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from trajplan.runs.lifecycle import SaveClock


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
    # the loss summed over the steps since the last log_every line, and their count: a
    # resumed run's next "train" line then averages the same steps as without the stop
    log_loss_sum: float = 0.0
    log_steps: int = 0

    def saved(self, wall_s: float) -> dict[str, Any]:
        """The fields for state.pt, with the run's training time up to now."""
        return {**dataclasses.asdict(self), "tokens": int(self.tokens), "wall_s": wall_s}

    @classmethod
    def from_saved(cls, state: dict[str, Any]) -> TrainState:
        """From a state.pt (older ones lack the optional fields); KeyError if one is missing."""
        return cls(
            **{
                f.name: state.get(f.name, _OPTIONAL_STATE[f.name])
                if f.name in _OPTIONAL_STATE
                else state[f.name]
                for f in dataclasses.fields(cls)
            }
        )

    def end_epoch(self, mean_loss: float) -> bool:
        """Close the current epoch with its mean loss; True if it is the best one so far."""
        is_best = mean_loss < self.best_loss
        if is_best:
            self.best_loss, self.best_epoch = mean_loss, self.epoch
        self.epoch += 1
        self.batch, self.epoch_batches, self.epoch_loss_sum = 0, 0, 0.0
        return is_best


# absent from state.pt files of older runs
_OPTIONAL_STATE = {"best_step": None, "last_loss": None, "log_loss_sum": 0.0, "log_steps": 0}


def restore(
    saved: dict[str, Any],
    model: TrajectoryGPT,
    optimizer: torch.optim.Optimizer,
    manifest: dict[str, Any],
    run_dir: Path,
) -> TrainState:
    """Continue from a state.pt: weights, optimizer, counters, RNG (and config.json's
    "created"). A state that does not fit the model is one TrajplanError."""
    try:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState.from_saved(saved)
        manifest["created"] = saved.get("created", manifest["created"])
        set_rng_state(saved["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise TrajplanError(f"{run_dir}: resume state does not fit ({detail})") from None
    return state


class Saver:
    """The checkpoints of one run: when they are due and what goes into them.

    `manifest` (config.json's fields besides the config) is shared with the trainer;
    `elapsed` returns the run's training time over all sessions.
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: RunConfig,
        model: TrajectoryGPT,
        optimizer: torch.optim.Optimizer,
        discretizer: Discretizer,
        manifest: dict[str, Any],
        elapsed: Callable[[], float],
        main: bool,
    ) -> None:
        self.run_dir, self.cfg, self.model, self.optimizer = run_dir, cfg, model, optimizer
        self.discretizer, self.manifest, self.elapsed = discretizer, manifest, elapsed
        self.main = main  # rank 0: the only one that writes
        self.last: tuple[int, str] | None = None  # (step, status) of the last checkpoint
        self.good_step: int | None = None  # step of the newest checkpoint on disk
        self.clock = SaveClock(cfg.train.save_every, cfg.train.save_every_min)
        self.running: Any = None  # the loop's RunningLoss (its partial log interval is saved)
        self.best_kept: tuple[float, int] = (math.inf, -1)  # best.safetensors' epoch loss

    def after_epoch(self, state: TrainState, is_best: bool, last: bool) -> None:
        """At an epoch's end: the final checkpoint after the last epoch, else one every
        save_every epochs or when due by the clock. The best epoch is the best of those
        that end in a checkpoint (only their weights are kept): an epoch between two
        checkpoints never becomes config.json's best_epoch without best.safetensors."""
        if last:
            self.save("finished", state, is_best)
        elif self.clock.due(state.epoch):
            self.save("running", state, is_best)
        elif is_best:  # its weights are not saved: the kept best stays the best
            state.best_loss, state.best_epoch = self.best_kept

    def kept(self) -> str:
        if self.good_step is None:
            return "no checkpoint was written"
        return f"the last good checkpoint (step {self.good_step}) is kept"

    def diverged(self, what: str, step: int) -> TrajplanError:
        """The error that stops a run whose loss or weights are no longer finite."""
        return TrajplanError(
            f"training diverged at step {step} ({what}): stopped without saving, "
            f"{self.kept()} in {self.run_dir}; start a new run with a lower train.lr "
            f"(was {self.cfg.train.lr:g})"
        )

    def info(self, status: str, state: TrainState) -> dict[str, Any]:
        """config.json's fields besides the config: the manifest and the progress."""
        info = {
            **self.manifest,
            "status": status,
            "step": state.step,
            "epoch": state.epoch,
            "tokens": int(state.tokens),
            "wall_s": round(self.elapsed(), 3),
            "last_loss": state.last_loss,
            "best_loss": None if math.isinf(state.best_loss) else state.best_loss,
            "best_epoch": state.best_epoch,
            "best_step": state.best_step,
        }
        if status in ("finished", "time_limit"):
            info["finished"] = now_iso()
        return info

    def save(self, status: str, state: TrainState, is_best: bool = False) -> None:
        """One checkpoint (rank 0 writes): weights, resume state, then config.json.

        Weights that are not all finite are never saved: the run stops with an error."""
        with torch.no_grad():
            if not all(bool(p.isfinite().all()) for p in self.model.parameters()):
                raise self.diverged("non-finite weights", state.step)
        if not self.main:
            return
        if is_best or not (self.run_dir / BEST_FILE).exists():
            is_best, state.best_step = True, state.step  # best.safetensors: these weights
        if self.running is not None:
            state.log_loss_sum, state.log_steps = float(self.running.loss), self.running.n
        info = self.info(status, state)
        saved = {
            "format": FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **state.saved(self.elapsed()),
            "created": self.manifest["created"],
            "rng": rng_state(),
        }
        try:
            save_checkpoint(
                self.run_dir, self.model, self.cfg, info, self.discretizer, saved, is_best
            )
        except TrajplanError as exc:  # disk full, ...: nothing of this checkpoint was renamed
            raise TrajplanError(f"{exc}; {self.kept()}") from None
        self.last = (state.step, status)
        self.good_step = state.step
        self.best_kept = (state.best_loss, state.best_epoch)
        self.clock.saved()


def epochs_done(manifest: dict[str, Any]) -> str:
    """A run's progress in epochs from its config.json, e.g. "2 epochs", "0.38 of an epoch
    of 4,000 steps" (a run stopped by --max-steps before its first epoch ended: "0 epochs"
    read as if nothing was trained), "2.5 epochs"."""
    step, per = manifest.get("step"), manifest.get("steps_per_epoch")
    if not isinstance(step, int) or not isinstance(per, int) or per <= 0:
        return f"{manifest.get('epoch')} epochs"
    done = step / per
    if step % per == 0:
        return f"{step // per} epoch{'s' * (step != per)}"
    if done < 1:
        return f"{done:.2g} of an epoch of {per:,} steps"
    return f"{done:.3g} epochs of {per:,} steps"
