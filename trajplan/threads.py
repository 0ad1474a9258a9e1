"""torch's CPU threads while trajplan plans or acts: one, as the CLI's `--threads` default,
also for the library (`Run.agent`, `evaluate_runs`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from trajplan.errors import TrajplanError

PLAN_THREADS = 1  # the CLI's default for planning and acting (`--threads`); the library's too


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Inside: torch's CPU intra-op threads set to `threads` (None: left as they are), the
    caller's count restored after. Planning runs many tiny ops: on a busy machine torch's
    default (one thread per core) made a TT step 30-100x slower than one thread."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise TrajplanError(f"threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
