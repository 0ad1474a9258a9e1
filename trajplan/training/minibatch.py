"""One minibatch loop: the steps of BC, IQL and the ensemble, their metrics lines, their bar.

    Counters    the loop's state (step, the stats summed since the last line, the lines, the
                training time): IQL saves and restores it with its nets
    Lines       what a metrics line holds (the kind, the stats' names), how often one is
                written, how it shows, and the error of a line whose stats are not finite
    run_steps   steps c.step+1..steps of the caller's `update()`, a metrics line every
                `every` steps and at the last one, a hook after every step

The caller owns everything random: `update()` draws its batch from its own generator and
takes one optimizer step, so the loop adds no generator call and a run's weights are those of
the same updates written out by hand. A metrics line is

    {"kind", "step", <the stats' means since the last line>, <the caller's extra fields>,
     "wall_s"}
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from trajplan.errors import TrajplanError
from trajplan.progress import Progress
from trajplan.runtime import json_text


@dataclass
class Counters:
    """The loop's state besides the caller's nets, optimisers and generator."""

    step: int  # updates done
    acc: torch.Tensor  # [S] float64 sums of the stats since the last metrics line
    lines: list[str]  # metrics.jsonl lines so far
    wall_s: float  # training time, earlier sessions included

    @classmethod
    def new(cls, n_stats: int, device: torch.device | str = "cpu") -> Counters:
        """Before the first step."""
        return cls(0, torch.zeros(n_stats, dtype=torch.float64, device=device), [], 0.0)

    def last(self) -> dict[str, Any]:
        """The last metrics line ({} before the first)."""
        return json.loads(self.lines[-1]) if self.lines else {}


@dataclass(frozen=True)
class Lines:
    """The metrics lines of one kind of run."""

    kind: str  # "bc", "iql", "ensemble"
    stats: tuple[str, ...]  # the names of update()'s stats, in its order
    every: int  # a line every this many steps, and one at the last step
    show: Callable[[dict[str, Any]], str]  # a line -> the bar's text ("loss 0.0123")
    diverged: Callable[[dict[str, Any]], TrajplanError]  # a line with a stat not finite


def run_steps(
    update: Callable[[], torch.Tensor],
    c: Counters,
    steps: int,
    lines: Lines,
    label: str,
    progress: bool = True,
    extra: Callable[[], dict[str, Any]] | None = None,
    hook: Callable[[Counters], None] | None = None,
) -> Counters:
    """Steps c.step + 1 .. steps: `update()` takes one optimizer step and returns its stats
    ([S] detached, S = len(lines.stats)); every `lines.every` steps and at the last one a
    metrics line of their means (and `extra()`'s fields) goes to c.lines, the bar shows it,
    and without a bar every tenth line is printed. `hook(c)` runs after every step (IQL's
    snapshots, saves and stop). A stat that is not finite raises `lines.diverged(line)`."""
    wall0, t0 = c.wall_s, time.perf_counter()
    with Progress(label, steps, enabled=progress) as bar:
        bar.update(completed=c.step)
        while c.step < steps:
            c.step += 1
            c.acc += update()  # [S] float64 += [S]
            c.wall_s = wall0 + time.perf_counter() - t0
            if c.step % lines.every == 0 or c.step == steps:
                text = lines.show(_write_line(c, lines, extra))
                bar.update(info=text)
                if not progress and c.step % (lines.every * 10) == 0:
                    print(f"{lines.kind} step {c.step}/{steps} {text}", flush=True)
            bar.update(completed=c.step)
            if hook is not None:
                hook(c)
    return c


def _write_line(
    c: Counters, lines: Lines, extra: Callable[[], dict[str, Any]] | None
) -> dict[str, Any]:
    """The metrics line of the steps since the last one (their stats' means); the sums
    start again from zero."""
    means = (c.acc / (c.step % lines.every or lines.every)).tolist()  # [S]
    c.acc.zero_()
    row: dict[str, Any] = {"kind": lines.kind, "step": c.step}
    row.update(zip(lines.stats, means, strict=True))
    if not all(math.isfinite(v) for v in means):
        raise lines.diverged(row)
    if extra is not None:
        row.update(extra())
    row["wall_s"] = round(c.wall_s, 3)
    c.lines.append(json_text(row) + "\n")
    return row
