"""Guards before work: the memory and disk a command will need, from the sizes it was asked
for, against what this machine has; a request that cannot fit is one TrajplanError naming
the option to lower, before anything is loaded, played or written.

    available_memory   free bytes of a device: MemAvailable (CPU) or cudaMemGetInfo (GPU)
    check_memory       refuse when an estimate exceeds what is available
    check_out_dir      an output folder that can be made and written, proved creating nothing
    check_disk         refuse when files will not fit: free space and `ulimit -f`
    size_text          bytes as people read them; mlp_params an MLP's weight count
    max_threads        the most CPU threads a command may ask for

Each stage's estimate sits beside the stage it sizes: `trajplan.planner.memory.plan_bytes`
(planning E episodes at once), `trajplan.evaluation.runner.eval_bytes` (eval.json),
`trajplan.baselines.bc.bc_bytes`, `trajplan.baselines.iql_nets.iql_bytes` and
`iql_state_bytes`, `trajplan.prediction.ensemble.ensemble_bytes`,
`trajplan.prediction.report.predict_bytes` (S x K rollouts of a TT model),
`trajplan.training.session.checkpoint_bytes`, `trajplan.behaviour.collect.dataset_bytes`.
They are upper-side approximations (calibrated on CPU against peak RSS, see
tests/test_guards.py): they refuse what would surely fail, not what is merely tight.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trajplan.errors import TrajplanError

if TYPE_CHECKING:
    import torch

GIB = 2.0**30
MEMORY_SHARE = 0.9  # of the available memory an estimate may take


def size_text(n: float) -> str:
    """Bytes as '512 KiB', '3.2 MiB', '12.0 GiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} bytes"


def available_memory(dev: torch.device | str = "cpu") -> int | None:
    """Free memory of the device (GPU) or available RAM (Linux); None when unknown."""
    kind = dev if isinstance(dev, str) else dev.type
    if kind.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(dev))[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(need: float, dev: torch.device | str, what: str, lower: str) -> None:
    """Refuse `what` (e.g. 'planning 10 episodes x 128 beams') when it needs more than
    MEMORY_SHARE of the device's available memory; `lower` names the option(s) to lower."""
    have = available_memory(dev)
    if have is None or need <= MEMORY_SHARE * have:
        return
    raise TrajplanError(
        f"{what} needs about {size_text(need)} of memory, {size_text(have)} are available "
        f"on {dev}: lower {lower}"
    )


def mlp_params(sizes: Sequence[int]) -> int:
    """Weights and biases of an MLP of layer sizes `sizes`."""
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def check_out_dir(out: str | Path, what: str = "--out folder") -> None:
    """Refuse, before any work, an output folder that cannot be made or written: a file
    where the folder should be, a path below a file, a folder no file can be written into.
    Proved by a temporary file in the nearest existing folder; nothing is left behind."""
    import tempfile

    d = Path(out)
    if d.exists() and not d.is_dir():
        raise TrajplanError(f"{what} {out} is a file, not a folder: choose another")
    probe = d.absolute()
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise TrajplanError(f"cannot create {what} {out}: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise TrajplanError(f"cannot write {what} {out}: {exc.strerror or exc}") from None


def file_size_limit() -> int | None:
    """The most bytes one file may hold here (`ulimit -f`, RLIMIT_FSIZE); None: no limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def free_disk(directory: str | Path) -> int:
    """Free bytes for this user on the filesystem of `directory` (or its nearest existing
    parent: the folder may not exist yet)."""
    d = Path(directory).absolute()
    while not d.exists() and d != d.parent:
        d = d.parent
    st = os.statvfs(d)
    return st.f_bavail * st.f_frsize


def check_disk(
    directory: str | Path, total: float, largest: float | None = None, what: str = "the output"
) -> None:
    """Refuse to start when `what` (`total` bytes, its largest file `largest`) will not fit
    in `directory`: too little free space, or a file larger than `ulimit -f` allows."""
    largest = total if largest is None else largest
    limit = file_size_limit()
    if limit is not None and largest > limit:
        raise TrajplanError(
            f"{what} writes a file of about {size_text(largest)} into {directory}, but files "
            f"may hold at most {size_text(limit)} here (ulimit -f): raise the limit or "
            "write less"
        )
    free = free_disk(directory)
    if total > free:
        raise TrajplanError(
            f"{what} needs about {size_text(total)} in {directory}, {size_text(free)} are "
            "free: free some space or choose another folder"
        )


def max_threads() -> int:
    """The most CPU threads a command may use: 4 per core (more only slows it down, and
    thousands crash OpenMP)."""
    return 4 * (os.cpu_count() or 1)
