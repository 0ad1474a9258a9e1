"""Child processes that stop together: signals reach each child once, nothing is lost.

`train --seeds --jobs` (trajplan.training.seeds: one command per seed) and `eval --workers`
(trajplan.evaluation.workers: one function call per episode batch) run their children
through `Children`:

- Each child runs in a session of its own, so the SIGINT a terminal sends on Ctrl-C (to the
  foreground process group) reaches the parent alone. The parent forwards the first SIGINT
  or SIGTERM exactly once to each running child's process group, starts no new child, and
  waits while the children save (a training checkpoints, an evaluation returns the episodes
  it played). A second signal to the parent kills the children (SIGKILL) at once.
- A parent that dies, even by kill -9, takes its children with it: every child starts
  through `python -m trajplan.parallel.procs` (`python_command`: this trajplan, whatever the
  working directory holds), which asks the kernel for a SIGTERM when the parent
  dies (Linux: prctl(PR_SET_PDEATHSIG); elsewhere a thread polls the parent's pid), so
  the child saves and exits as if it had been sent SIGTERM; a command child then execs its
  program (the request survives exec).
- A child hears SIGINT and SIGTERM even if the thread that started it blocks them (it
  unblocks them first); start children from a thread that outlives them (the kernel's
  parent-death signal follows the starting thread).
- A function child sends its result, and any `report(...)` events on the way, back over a
  pipe; one killed on the way sends none and counts as failed.
- Exit codes: 0 done, 2 an error, 128 + the signal (130 Ctrl-C, 143 SIGTERM) when stopped.
"""

from __future__ import annotations

import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR = 0, 2
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PARENT_ENV = "TRAJPLAN_PARENT_PID"  # set for a child: the pid it dies with
_PR_SET_PDEATHSIG = 1
_HEADER = struct.Struct("<Q")  # a frame: its length, then a pickle
_channel: Any = None  # in a function child: the pipe to the parent


def python_command(module: str, *args: str) -> list[str]:
    """`python -m MODULE ARGS` that imports this process's trajplan whatever the child's
    working directory: `-m` puts the working directory first on sys.path, so a folder named
    trajplan there (working from the clone's parent, say) would be imported instead. The
    child drops that entry and, unless it is on its path already, puts the folder that
    holds this trajplan first."""
    root = str(Path(__file__).resolve().parents[2])
    boot = (
        "import runpy, sys\n"
        "if not getattr(sys.flags, 'safe_path', False): del sys.path[0]\n"  # the cwd (3.11: -P)
        f"if {root!r} not in sys.path: sys.path.insert(0, {root!r})\n"
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", boot, *args]


def exit_code(signum: int | None) -> int:
    """0 for no signal, else 128 + signum (130 Ctrl-C, 143 SIGTERM): `Stopped.exit_code`'s
    rule, for a parent that has not imported trajplan.runtime (and torch with it)."""
    return 128 + int(signum) if signum else EXIT_OK


def die_with_parent(parent: int) -> None:
    """In a child: get SIGTERM when process `parent` ends (kill -9 included)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    else:  # no prctl: poll

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # it died before the request took hold
        os.kill(os.getpid(), signal.SIGTERM)


def report(event: Any) -> None:
    """In a function child started by `Children.call`: send `event` to the parent's
    on_event; elsewhere nothing."""
    if _channel is not None:
        _send(("event", event))


def _send(message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    _channel.write(_HEADER.pack(len(data)) + data)
    _channel.flush()


@dataclass
class Child:
    """One child process; `result` (a call's return value) and `error` once it has ended."""

    name: str
    proc: subprocess.Popen
    result: Any = None
    error: str | None = None
    fd: int | None = None  # a call's pipe (read end), None at EOF or for a command
    buf: bytearray = field(default_factory=bytearray)
    signalled: bool = False  # the stop signal was forwarded to it

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def stopped(self) -> bool:
        """Ended by a signal it was sent (it saved what it had)."""
        code = self.proc.returncode
        return code is not None and (-code in STOP_SIGNALS or code - 128 in STOP_SIGNALS)


class Children:
    """The children of one parent; a context manager (signal handlers inside).

    with Children(on_event) as kids:
        kids.command("seed0", [...], log=path)  /  kids.call("w0", fn, *args)
        while kids.running: for child in kids.poll(): ...
    `stop` is the signal that asked everyone to stop (None while none came). Leaving the
    block by an exception stops the running children (SIGTERM) and waits for them.
    """

    def __init__(self, on_event: Callable[[Child, Any], None] | None = None) -> None:
        self.on_event = on_event
        self.running: list[Child] = []
        self.stop: int | None = None
        self._sel = selectors.DefaultSelector()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Children:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if self.running:
                if self.stop is None:
                    self.stop_all(signal.SIGTERM)
                self.wait()
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._sel.close()

    def _handle(self, signum: int, frame: object) -> None:
        if self.stop is None:
            self.stop_all(signum)
            return
        self._signal(self.running, signal.SIGKILL)  # a second signal: abandon the children
        from trajplan.runtime import Stopped

        raise Stopped(self.stop)

    def stop_all(self, signum: int) -> None:
        """Forward `signum` once to every running child; start no new one after this."""
        self.stop = int(signum)
        self._signal(self.running, signum)

    def _signal(self, children: list[Child], signum: int) -> None:
        for child in children:
            if child.signalled and signum != signal.SIGKILL:
                continue  # once each
            child.signalled = True
            try:
                os.killpg(child.proc.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def _start(self, mode: list[str], **kw: Any) -> subprocess.Popen:
        env = {**(kw.pop("env", None) or os.environ), PARENT_ENV: str(os.getpid())}
        cmd = python_command("trajplan.parallel.procs", *mode)
        return subprocess.Popen(cmd, start_new_session=True, env=env, **kw)

    def command(
        self, name: str, cmd: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> Child:
        """Run `cmd` (a program and its arguments) as a child, its output appended to `log`."""
        with open(log, "a") as f:
            proc = self._start(["exec", *cmd], stdout=f, stderr=subprocess.STDOUT, env=env)
        return self._add(Child(name, proc))

    def _add(self, child: Child) -> Child:
        self.running.append(child)
        if self.stop is not None:  # a signal came while it started: it gets it too, once
            self._signal([child], self.stop)
        return child

    def call(self, name: str, fn: Callable[..., Any], *args: Any) -> Child:
        """Run fn(*args) in a child (fn importable by name, args picklable)."""
        r, w = os.pipe()
        try:
            proc = self._start(["call", str(w)], stdin=subprocess.PIPE, pass_fds=(w,))
        finally:
            os.close(w)
        child = Child(name, proc, fd=r)
        self._sel.register(r, selectors.EVENT_READ, child)
        self._add(child)
        try:
            assert proc.stdin is not None
            proc.stdin.write(pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL))
            proc.stdin.close()
        except BrokenPipeError:  # it died at once: poll() reports it
            pass
        return child

    def poll(self, timeout: float = 0.2) -> list[Child]:
        """Read what the children sent for up to `timeout` seconds; returns those that ended
        since the last call (`result`, `error`, `returncode` set)."""
        for key, _ in self._sel.select(timeout) if self._sel.get_map() else ():
            self._read(key.data)
        if not self._sel.get_map():
            time.sleep(timeout)
        ended = []
        for child in list(self.running):
            if child.fd is None and child.proc.poll() is not None:
                self.running.remove(child)
                ended.append(child)
                code = child.proc.returncode
                if code != EXIT_OK and child.error is None and not child.stopped:
                    child.error = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return ended

    def wait(self) -> list[Child]:
        """Until every child has ended; returns them."""
        ended = []
        while self.running:
            ended += self.poll()
        return ended

    def _read(self, child: Child) -> None:
        assert child.fd is not None
        data = os.read(child.fd, 1 << 16)
        if not data:
            self._sel.unregister(child.fd)
            os.close(child.fd)
            child.fd = None
            return
        child.buf += data
        while len(child.buf) >= _HEADER.size:
            (n,) = _HEADER.unpack_from(child.buf)
            if len(child.buf) < _HEADER.size + n:
                break
            kind, value = pickle.loads(bytes(child.buf[_HEADER.size : _HEADER.size + n]))
            del child.buf[: _HEADER.size + n]
            if kind == "event" and self.on_event is not None:
                self.on_event(child, value)
            elif kind == "result":
                child.result = value
            elif kind == "error":
                child.error = value


def _run_call(fd: int) -> int:
    """A function child: read (fn, args) from stdin, send back its result or error."""
    global _channel
    _channel = os.fdopen(fd, "wb")
    fn, args = pickle.load(sys.stdin.buffer)
    from trajplan.errors import TrajplanError
    from trajplan.runtime import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            _send(("result", fn(*args)))
    except KeyboardInterrupt as exc:  # stopped before it had anything to give
        return exit_code(getattr(exc, "signum", signal.SIGINT))
    except TrajplanError as exc:
        _send(("error", str(exc)))
        return EXIT_ERROR
    except Exception as exc:  # the parent says it in one line
        _send(("error", f"{type(exc).__name__}: {exc}".splitlines()[0][:300]))
        return EXIT_ERROR
    return EXIT_OK


def main(argv: list[str]) -> int:
    """`python -m trajplan.parallel.procs exec PROGRAM ARGS...` or `... call FD` (see Children)."""
    try:
        # a parent's thread may block signals (Ray's task threads block SIGINT), and a
        # child inherits the mask, also across exec: it must hear SIGINT and SIGTERM
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        die_with_parent(int(os.environ.pop(PARENT_ENV, os.getppid())))
        if argv[0] == "exec":
            os.execv(argv[1], argv[1:])
        return _run_call(int(argv[1]))
    except KeyboardInterrupt as exc:  # stopped while starting
        return exit_code(getattr(exc, "signum", signal.SIGINT))
    except BrokenPipeError:  # the parent is gone
        return EXIT_ERROR


if __name__ == "__main__":  # run as trajplan.parallel.procs, not __main__: report() reads its pipe
    from trajplan.parallel.procs import main as run

    sys.exit(run(sys.argv[1:]))
