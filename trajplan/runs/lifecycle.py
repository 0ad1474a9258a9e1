"""A run directory's lifecycle, one set of rules for every training: TT's
(`trajplan.training`), IQL's, BC's and the ensemble's.

    is_dead_end   RUN holds nothing to keep: a process stopped before its first save left
                  its lock, temporary files and the kind's start-up files at most
    check_out     --out for a new run (absent, empty or a dead end) or a resume (it exists);
                  anything else is one TrajplanError, the same words for every kind
    open_run_dir  check_out, then lock RUN (`trajplan.runtime.DirLock`: a second process
                  fails at once) and remove the temporary files a killed writer left
    load_state    RUN/state.pt of a kind's format; absent, damaged or foreign: one line
    SaveClock     a save is due every N steps (or epochs) or every M minutes since the last
    all_or_nothing  a finished run's files written together, or none of them left

What a kind saves and restores (its nets, optimisers, counters) stays with the kind.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from trajplan.errors import TrajplanError
from trajplan.runtime import DirLock, remove_orphaned_tmp

STATE_FILE = "state.pt"


def is_dead_end(run_dir: str | Path, startup: Collection[str] = ()) -> bool:
    """True when RUN is a directory holding only what a process leaves before its first
    save: its lock, temporary files (*.tmp) and the names in `startup`. Empty counts."""
    p = Path(run_dir)
    if not p.is_dir():
        return False
    keep = {DirLock.NAME, *startup}
    return all(c.name in keep or c.name.endswith(".tmp") for c in p.iterdir())


def check_out(
    out: Path, resume: bool, startup: Collection[str] = (), resumable: bool = False
) -> None:
    """A new run needs RUN absent, empty or a dead end; a resume needs it to exist.
    resumable: the refusal of an existing RUN says that --resume continues it."""
    if resume:
        if not out.is_dir():
            raise TrajplanError(f"cannot resume {out}: no such run directory")
        return
    if out.exists() and not out.is_dir():
        raise TrajplanError(f"--out {out} is a file, not a directory")
    if out.is_dir() and not is_dead_end(out, startup):
        hint = ", or continue it with --resume" if resumable else ""
        raise TrajplanError(f"run directory {out} already exists: choose another --out{hint}")


def open_run_dir(
    out: Path, resume: bool = False, startup: Collection[str] = (), resumable: bool = False
) -> DirLock:
    """`check_out`, then lock RUN (made if absent) and remove its orphaned temporary
    files. The caller releases the lock (`release(remove_if_unused=True)` on failure: a
    failed start leaves no trace)."""
    check_out(out, resume, startup, resumable)
    lock = DirLock(out, "run directory")
    remove_orphaned_tmp(out)  # left by a process killed mid-write
    return lock


def load_state(run_dir: Path, fmt: str, kind: str, absent: str) -> dict[str, Any]:
    """RUN/state.pt of format `fmt` (CPU tensors). Absent ("cannot resume RUN: no state.pt
    (`absent`)"), damaged or of another format: one TrajplanError naming the `kind`."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise TrajplanError(f"cannot resume {run_dir}: no {STATE_FILE} ({absent})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, a pickle error, ...
        text = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise TrajplanError(f"{path}: corrupt or truncated {kind} resume state ({text})") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise TrajplanError(f"{path}: not a trajplan {kind} resume state")
    return state


class SaveClock:
    """When the next save is due: every `every` steps (or epochs), or once `every_min`
    minutes have passed since the last save (a kill -9 then loses less)."""

    def __init__(self, every: int, every_min: float | None) -> None:
        self.every, self.every_min = every, every_min
        self.t_saved = time.perf_counter()

    def by_clock(self) -> bool:
        """every_min minutes since the last save."""
        late = time.perf_counter() - self.t_saved
        return self.every_min is not None and late >= 60 * self.every_min

    def due(self, count: int) -> bool:
        """count (steps or epochs) is a multiple of every, or the clock says so."""
        return count % self.every == 0 or self.by_clock()

    def saved(self) -> None:
        """A save was written: the clock starts again."""
        self.t_saved = time.perf_counter()


@contextmanager
def all_or_nothing(run_dir: Path, files: Collection[str]) -> Iterator[None]:
    """Inside, a run writes its `files` into run_dir; should anything fail (a full disk, a
    signal), none of them is left: never a half-written run that looks finished."""
    try:
        yield
    except BaseException:
        for name in files:
            (run_dir / name).unlink(missing_ok=True)
        raise
