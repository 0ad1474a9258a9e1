"""Devices, seeding and atomic file writes: shared by train, plan, eval and collect."""

from __future__ import annotations

import fcntl
import json
import math
import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def file_mode() -> int:
    """The mode a new file gets from the process umask (0o644 under the usual 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def stage_file(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call write(tmp) on a new temporary file beside `path` and return tmp (not renamed).

    The file gets the umask's mode (mkstemp's 0600 would hide runs from collaborators on
    shared storage). Any failure (disk full, no permission) removes the temporary file and
    is one TrajplanError.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise TrajplanError(f"cannot write {path}: {exc.strerror or exc}") from None
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())  # after: some writers replace the file
    except TrajplanError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:  # OSError, torch's RuntimeError, SafetensorError, ...
        tmp.unlink(missing_ok=True)
        raise TrajplanError(
            f"cannot write {path} ({_first_line(exc)}): is the disk full?"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


@contextmanager
def staged_writes() -> Iterator[Callable[[str | Path, Callable[[Path], Any]], None]]:
    """Write several files all-or-nothing: `stage(path, write)` for each inside the block;
    they are renamed into place, in order, only when every one was written. A failure or a
    signal inside the block leaves the old files as they were and no temporary file."""
    staged: list[tuple[Path, Path]] = []

    def stage(path: str | Path, write: Callable[[Path], Any]) -> None:
        staged.append((stage_file(path, write), Path(path)))

    try:
        yield stage
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it into place."""
    with staged_writes() as stage:
        stage(path, write)
    return Path(path)


def check_writable(directory: str | Path, what: str = "output folder") -> Path:
    """Create `directory` if needed and prove a file can be written there, so a command
    fails in its first second rather than after its expensive work."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=d)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise TrajplanError(f"cannot write to {what} {d}: {exc.strerror or exc}") from None
    return d


def check_out_file(path: str | Path, what: str = "output file") -> Path:
    """An output file's path, checked before the work that makes it: not a folder, and its
    folder writable (created if needed)."""
    p = Path(path)
    if p.is_dir():
        raise TrajplanError(f"{what} {p} is a folder: give a file name, e.g. {p / 'out.json'}")
    check_writable(p.parent, f"the folder of {what}")
    return p


def unique_dir(parent: str | Path, name: str) -> Path:
    """Create and return parent/name, or parent/name-2, -3, ... if taken: never reuse one."""
    check_writable(parent)
    for n in range(1, 10_000):
        path = Path(parent) / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise TrajplanError(f"cannot create {path}: {exc.strerror or exc}") from None
    raise TrajplanError(f"too many folders named {name}* in {parent}")


def read_tagged_safetensors(
    path: str | Path, fmt: str, what: str, framework: str = "numpy"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(its "meta" JSON, every tensor) of a safetensors file whose metadata says `format`
    fmt; a missing, unreadable or foreign file, or weights holding NaN or inf, is a
    one-line TrajplanError naming `what`."""
    import numpy as np
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise TrajplanError(f"{what} file not found: {path}")
    try:
        with safe_open(str(path), framework=framework) as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise TrajplanError(f"{path} is not a readable safetensors file: {exc}") from None
    if header.get("format") != fmt:
        raise TrajplanError(f"{path} is not a trajplan {what} (format {header.get('format')!r})")
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError):
        raise TrajplanError(f"{path}: damaged {what} metadata") from None
    bad = [k for k, v in tensors.items() if not np.isfinite(np.asarray(v, dtype=float)).all()]
    if bad:
        more = " and more" if len(bad) > 1 else ""
        raise TrajplanError(
            f"{path}: {what} weights hold NaN or inf ({bad[0]}{more}): the training diverged; "
            "retrain it"
        )
    return meta, tensors


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def json_text(obj: Any, indent: int | None = None) -> str:
    """Strict JSON of `obj` (every writer's): NaN and inf become null, which any JSON reader
    takes (json.dumps would write bare NaN, which strict readers refuse)."""
    return json.dumps(_finite(obj), indent=indent, allow_nan=False)


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write `obj` as indented, strict JSON (`json_text`)."""
    return atomic_write(path, lambda p: p.write_text(json_text(obj, indent=2) + "\n"))


class DirLock:
    """An exclusive lock on DIR/.lock (fcntl.flock) so one process at a time writes DIR.

    The kernel drops the lock when the process exits or is killed (even by kill -9), so a
    stale .lock file never blocks anyone. The file holds the owner's pid, for the message.
    """

    NAME = ".lock"

    def __init__(self, directory: str | Path, what: str = "directory") -> None:
        self.dir = Path(directory)
        self.created = not self.dir.exists()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.file = (self.dir / self.NAME).open("a+")
        except OSError as exc:
            raise TrajplanError(f"cannot write {what} {self.dir}: {exc.strerror}") from None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            pid = self.file.read().strip() or "?"
            self.file.close()
            raise TrajplanError(
                f"{what} {self.dir} is in use by another process (pid {pid}): wait for it to "
                "end, or choose another --out"
            ) from None
        try:  # unbuffered: a failed write leaves nothing for close() to retry
            os.ftruncate(self.file.fileno(), 0)
            os.write(self.file.fileno(), f"{os.getpid()}\n".encode())
        except OSError as exc:  # disk full, ulimit -f: no traceback, no lock left behind
            self.release(remove_if_unused=True)
            raise TrajplanError(
                f"cannot write {what} {self.dir}: {exc.strerror or exc} (is the disk full?)"
            ) from None

    def release(self, remove_if_unused: bool = False) -> None:
        """Unlock; with remove_if_unused and nothing but the lock file in DIR, delete the
        lock file, and DIR too if this lock created it (a failed start leaves no trace)."""
        if self.file.closed:
            return
        if remove_if_unused and [p.name for p in self.dir.iterdir()] == [self.NAME]:
            (self.dir / self.NAME).unlink()
            if self.created:
                self.dir.rmdir()
        self.file.close()  # closing the last descriptor drops the flock


def remove_orphaned_tmp(directory: str | Path) -> None:
    """Delete the .NAME.*.tmp files that `atomic_write` leaves when a process is killed
    mid-write (call it only while holding the directory's DirLock)."""
    for path in Path(directory).glob(".*.tmp"):
        path.unlink(missing_ok=True)


class Stopped(KeyboardInterrupt):
    """Stopped by a signal (Ctrl-C, SIGTERM) after saving what there was to save; the CLI
    exits with `exit_code` (128 + signum: 130, 143). The API raises it too (`train`,
    `evaluate_runs`, `collect`, ...); a script ends as the CLI does with

        try: train(cfg, "runs/x")
        except Stopped as stop: sys.exit(stop.exit_code)   # the checkpoint is saved
    """

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = f"signal {self.signum}"
        return f"stopped by {name} after saving what there was to save (exit {self.exit_code})"


class StopFlag:
    """Ctrl-C or SIGTERM (kill, docker stop, a scheduler's pre-emption) between steps:
    finish the step, checkpoint, then stop. A second signal aborts at once, unless it comes
    within DUPLICATE_S of the first: the same stop delivered twice (a scheduler signals every
    process of a job, and a `--seeds` parent forwards it too)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    DUPLICATE_S = 1.0

    def __init__(self, enabled: bool) -> None:
        self.requested: int | None = None  # the signal number once one arrived
        self.t_requested = 0.0
        self.previous: dict[int, Any] = {}
        if enabled and threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            if time.monotonic() - self.t_requested < self.DUPLICATE_S:
                return
            raise Stopped(signum)
        self.requested, self.t_requested = signum, time.monotonic()

    def close(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside: SIGTERM (kill, docker stop, a scheduler) raises Stopped(SIGTERM) in the main
    thread, as Ctrl-C raises KeyboardInterrupt, so one `except KeyboardInterrupt` saves
    partial work for both."""

    def handle(signum: int, frame: object) -> None:
        raise Stopped(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_held() -> Iterator[None]:
    """Inside: SIGINT and SIGTERM are only noted; when the block ends, the handlers that
    were there before take the first one noted. For native calls that call back into
    Python (Minari's metadata makes a MuJoCo env, whose loader runs Python callbacks): an
    exception raised by a signal handler inside such a callback cannot cross the C++ frames
    and aborts the process (seen: `libc++abi: terminating`, exit -6, staging left behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: noted.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if noted:
            handler = previous[noted[0]]
            if callable(handler):
                handler(noted[0], None)
            elif handler != signal.SIG_IGN:  # the default action: deliver it again
                os.kill(os.getpid(), noted[0])


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Inside: SIGINT and SIGTERM first reach the Python handler outside the block (a
    training loop's stop flag, which checkpoints after the step), then raise Stopped here,
    so long work inside (an evaluation during training) ends at once instead of finishing.
    A signal with no such handler outside is left as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outer = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    outer = {s: h for s, h in outer.items() if callable(h) and h is not signal.default_int_handler}

    def handle(signum: int, frame: Any) -> None:
        outer[signum](signum, frame)
        raise Stopped(signum)

    for sig in outer:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in outer.items():
            signal.signal(sig, handler)
