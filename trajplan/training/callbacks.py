"""What a training run reports, as callbacks on the loop (`trajplan.training.loop.Trainer`).

The loop calls `on_record` with every metrics line it makes (kind "train" every log_every
steps, "epoch" at each epoch's end, "val" for a validation loss) and `on_step` after every
optimizer step (kind "eval" records come from `trajplan.training.live_eval`); `close` runs when the
loop ends, however it ends. Only rank 0 gets
callbacks (`default_callbacks`): the other ranks of a torchrun job write nothing.

    MetricsFile   RUN/metrics.jsonl, always; a resumed run first drops the lines past its
                  checkpoint
    TensorBoard   RUN/tensorboard scalars (`tensorboard` extra)
    WandB         a Weights & Biases run (`wandb` extra); WANDB_MODE=offline writes it
                  under RUN/wandb to `wandb sync` later, without network
    ProgressBar   a rich progress bar with loss, lr, tokens/s and ETA (plain lines without a
                  terminal)
The loggers are chosen with one list (`trajplan train --logger tensorboard,wandb`); the
default is metrics.jsonl alone.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trajplan.errors import TrajplanError
from trajplan.evaluation.plot import read_rows
from trajplan.progress import Progress
from trajplan.runs.checkpoint import METRICS_FILE
from trajplan.runtime import atomic_write, json_text


class Callback:
    """A hook on the training loop; every method is optional."""

    def on_record(self, record: dict[str, Any]) -> None:
        """A metrics line: {"kind": "train" | "epoch" | "val", "step", "epoch", ...}."""

    def on_step(self, step: int) -> None:
        """After optimizer step `step` (1-based over the run)."""

    def close(self) -> None:
        """The loop has ended (finished, stopped or failed)."""


class MetricsFile(Callback):
    """metrics.jsonl, one JSON object per record."""

    def __init__(self, run_dir: Path, keep_until_step: int | None) -> None:
        self.path = run_dir / METRICS_FILE
        if keep_until_step is not None and self.path.exists():  # drop lines past the checkpoint
            kept = [
                json_text(row) + "\n"
                for row in read_rows(self.path)  # damaged lines are dropped, with a warning
                if not isinstance(row.get("step"), (int, float)) or row["step"] <= keep_until_step
            ]
            atomic_write(self.path, lambda p: p.write_text("".join(kept)))
        self.file = self.path.open("a")

    def on_record(self, record: dict[str, Any]) -> None:
        try:
            self.file.write(json_text(record) + "\n")
            self.file.flush()
        except OSError as exc:
            raise TrajplanError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:  # already reported by on_record (disk full)
            pass


class TensorBoard(Callback):
    """Loss, lr and tokens/s of every record as TensorBoard scalars (prefix: its kind)."""

    def __init__(self, writer: Any) -> None:
        self.tb = writer

    @classmethod
    def create(cls, run_dir: Path, required: bool = False) -> TensorBoard | None:
        """The callback; when tensorboard is not installed, None (or an error if required)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if required:
                raise TrajplanError(
                    'the tensorboard logger needs tensorboard: pip install "trajplan[tensorboard]"'
                ) from None
            return None
        return cls(SummaryWriter(str(run_dir / "tensorboard")))

    def on_record(self, record: dict[str, Any]) -> None:
        for key, value in scalars(record).items():
            self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.tb.close()


class WandB(Callback):
    """Every number of every record as a W&B metric ("kind/key", x axis "step"). The W&B
    run id is kept in RUN/wandb_id, so a resumed run continues the same W&B run."""

    ID_FILE = "wandb_id"

    def __init__(self, run: Any) -> None:
        self.run = run

    @classmethod
    def create(cls, run_dir: Path, config: dict[str, Any] | None = None) -> WandB:
        try:
            import wandb
        except ImportError:
            raise TrajplanError(
                'the wandb logger needs wandb: pip install "trajplan[wandb]"'
            ) from None
        id_file = run_dir / cls.ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        atomic_write(id_file, lambda p: p.write_text(run_id + "\n"))
        run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "trajplan"),
            name=run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            config=config or {},
        )
        run.define_metric("step")
        run.define_metric("*", step_metric="step")
        return cls(run)

    def on_record(self, record: dict[str, Any]) -> None:
        self.run.log({**scalars(record), "step": record["step"]})

    def close(self) -> None:
        self.run.finish()


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The plottable numbers of a metrics record, keyed "kind/name" (train/loss, val/loss)."""
    kind = record.get("kind", "train")
    skip = {"kind", "step", "epoch"}
    return {
        f"{kind}/{k}": float(v)
        for k, v in record.items()
        if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)
    }


class ProgressBar(Callback):
    """Progress over the run's optimizer steps: a rich bar on a terminal, plain periodic
    lines under nohup, slurm or a pipe (`trajplan.progress.Progress`)."""

    def __init__(self, total: int, done: int, title: str) -> None:

        self.bar = Progress(f"train {title}", total)
        self.bar.update(completed=done)

    def on_record(self, record: dict[str, Any]) -> None:
        if record.get("kind") != "train":
            return
        self.bar.update(
            completed=record["step"],
            info=f"epoch {record['epoch']}, loss {record['loss']:.4f}, lr {record['lr']:.2e}, "
            f"{record['tokens_per_s']:,.0f} tok/s",
        )

    def on_step(self, step: int) -> None:
        self.bar.update(completed=step)

    def close(self) -> None:
        self.bar.close()


LOGGERS = ("jsonl", "tensorboard", "wandb")


def check_loggers(loggers: Sequence[str]) -> tuple[str, ...]:
    """Validate a logger list before any work: names from LOGGERS, also comma-separated
    ("tensorboard,wandb"); jsonl is always on."""
    names = [n.strip() for item in loggers for n in item.split(",") if n.strip()]
    bad = [n for n in names if n not in LOGGERS]
    if bad:
        choices = ", ".join(LOGGERS)
        raise TrajplanError(f"unknown logger {bad[0]!r}: use {choices} (comma-separated)")
    return tuple(dict.fromkeys(["jsonl", *names]))


def default_callbacks(
    run_dir: Path,
    resumed_at: int | None,
    total_steps: int,
    progress: bool,
    loggers: Sequence[str] = ("jsonl",),
    config: dict[str, Any] | None = None,
) -> list[Callback]:
    """Rank 0's callbacks: metrics.jsonl always, the chosen loggers (see the module
    docstring), the progress bar if asked. `config` is what W&B records for the run."""
    names = check_loggers(loggers)
    callbacks: list[Callback] = [MetricsFile(run_dir, resumed_at)]
    if "tensorboard" in names:
        tb = TensorBoard.create(run_dir, required=True)
        assert tb is not None
        callbacks.append(tb)
    if "wandb" in names:
        callbacks.append(WandB.create(run_dir, config))
    if progress:
        callbacks.append(ProgressBar(total_steps, resumed_at or 0, run_dir.name))
    return callbacks
