"""What a training run reports, as callbacks on the loop (`trajplan.train.Trainer`).

The loop calls `on_record` with every metrics line it makes (kind "train" every log_every
steps, "epoch" at each epoch's end, "val" for a validation loss) and `on_step` after every
optimizer step; `close` runs when the loop ends, however it ends. Only rank 0 gets
callbacks (`default_callbacks`): the other ranks of a torchrun job write nothing.

    MetricsFile   RUN/metrics.jsonl; a resumed run first drops the lines past its checkpoint
    TensorBoard   RUN/tensorboard scalars, when tensorboard is installed
    ProgressBar   a rich progress bar with loss, lr, tokens/s and ETA
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trajplan.checkpoint import METRICS_FILE
from trajplan.errors import TrajplanError
from trajplan.runtime import atomic_write


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
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= keep_until_step:
                        kept.append(line + "\n")
                except json.JSONDecodeError:
                    continue
            atomic_write(self.path, lambda p: p.write_text("".join(kept)))
        self.file = self.path.open("a")

    def on_record(self, record: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(record) + "\n")
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
    def create(cls, run_dir: Path) -> TensorBoard | None:
        """The callback, or None when tensorboard is not installed (the JSON lines suffice)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return cls(SummaryWriter(str(run_dir / "tensorboard")))

    def on_record(self, record: dict[str, Any]) -> None:
        prefix = record.get("kind", "train")
        for key in ("loss", "lr", "tokens_per_s"):
            if record.get(key) is not None:
                self.tb.add_scalar(f"{prefix}/{key}", record[key], record["step"])

    def close(self) -> None:
        self.tb.close()


class ProgressBar(Callback):
    """Progress over the run's optimizer steps: a rich bar on a terminal, plain periodic
    lines under nohup, slurm or a pipe (`trajplan.progress.Progress`)."""

    def __init__(self, total: int, done: int, title: str) -> None:
        from trajplan.progress import Progress

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


def default_callbacks(
    run_dir: Path, resumed_at: int | None, total_steps: int, progress: bool
) -> list[Callback]:
    """Rank 0's callbacks: metrics.jsonl, TensorBoard when installed, the bar if asked."""
    callbacks: list[Callback] = [MetricsFile(run_dir, resumed_at)]
    tb = TensorBoard.create(run_dir)
    if tb is not None:
        callbacks.append(tb)
    if progress:
        callbacks.append(ProgressBar(total_steps, resumed_at or 0, run_dir.name))
    return callbacks
