"""Devices, seeding and atomic file writes: shared by train, plan, eval and collect."""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajplan.errors import TrajplanError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when present, else cpu; anything else is checked, not trusted."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise TrajplanError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrajplanError(f"device {name!r} requested but CUDA is not available here")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices). CUDA kernels may still be nondeterministic."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write `obj` as indented JSON."""
    return atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2) + "\n"))
