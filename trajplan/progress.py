"""Progress of long jobs (eval, collect, bc): a rich bar on a terminal, plain lines otherwise.

Under nohup, slurm or a pipe a live bar shows nothing useful, so when stdout is not a
terminal `Progress` prints one line when it starts, then one every `interval_s` seconds
(default 30, or $TRAJPLAN_PROGRESS_EVERY), and one when it ends:

    planning halfcheetah: 2,000/10,000 (20%), mean return 345.2, 1m05s elapsed, ~4m20s left
"""

from __future__ import annotations

import os
import time
from typing import Any

from rich.console import Console


def duration(seconds: float) -> str:
    """'12s', '4m05s', '1h02m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """A progress display for `total` units of work; a context manager.

    update(advance=..., completed=..., total=..., description=..., info=...): `info` is a
    short text shown after the count (e.g. "mean return 345.2").
    """

    def __init__(
        self,
        description: str,
        total: float,
        enabled: bool = True,
        interval_s: float | None = None,
        console: Console | None = None,
    ) -> None:
        self.description, self.total, self.completed, self.info = description, total, 0.0, ""
        self.enabled = enabled
        self.console = console or Console()
        every = interval_s if interval_s is not None else os.environ.get("TRAJPLAN_PROGRESS_EVERY")
        self.interval_s = float(every) if every is not None else 30.0
        self.plain = not self.console.is_terminal
        self._t0 = self._last = time.perf_counter()
        self._bar: Any = None
        self._closed = False
        if not enabled:
            return
        if self.plain:
            self._line("started")
        else:
            from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                "{task.fields[info]}",
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._task = self._bar.add_task(description, total=total, info="")
            self._bar.start()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(failed=exc_type is not None)

    def update(
        self,
        advance: float = 0,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
        info: str | None = None,
    ) -> None:
        self.completed = completed if completed is not None else self.completed + advance
        self.total = total if total is not None else self.total
        self.description = description or self.description
        self.info = info if info is not None else self.info
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=self.completed, total=self.total,
                             description=self.description, info=self.info)  # fmt: skip
        elif time.perf_counter() - self._last >= self.interval_s:
            self._line()

    def _line(self, note: str = "") -> None:
        self._last = now = time.perf_counter()
        done, total = self.completed, max(self.total, 1)
        parts = [f"{done:,.0f}/{total:,.0f} ({100 * done / total:.0f}%)"]
        if self.info:
            parts.append(self.info)
        elapsed = now - self._t0
        parts.append(note or f"{duration(elapsed)} elapsed")
        if 0 < done < total and not note:
            parts.append(f"~{duration(elapsed * (total - done) / done)} left")
        print(f"{self.description}: {', '.join(parts)}", file=self.console.file, flush=True)

    def close(self, failed: bool = False) -> None:
        if self._closed or not self.enabled:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.stop()
        else:
            took = duration(time.perf_counter() - self._t0)
            self._line(f"stopped after {took}" if failed else f"done in {took}")
