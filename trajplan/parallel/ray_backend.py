"""Ray, an optional backend for the calls `trajplan.parallel.procs` runs: one Ray task per call.

    pip install 'trajplan[ray]'
    trajplan eval RUN --episodes 100 --workers 20 --ray auto    # 20 batches on a cluster
    trajplan train --config cpu-recipe --dataset ID --seeds 0-7 --out runs/x --ray auto

ADDRESS is ray.init's: "auto" joins the cluster this machine belongs to (started with `ray
start`), ray://HOST:10001 a remote one; "local" starts a new Ray of this machine's CPUs in
this process, even where a cluster runs (ray.init() alone would join it). One line on
stderr names the instance started or the cluster joined. RAY_ADDRESS in the environment
is the default of --ray. The caller resolves every path to an absolute one before it goes
to a task (a task runs in the folder where its cluster was started); outputs are written
where the tasks run, so on a cluster --out must be on a filesystem every node shares.

Ctrl-C or SIGTERM cancels the tasks still running: Ray raises KeyboardInterrupt inside each
(as Ctrl-C would), so an evaluation task returns the episodes it played and a training task
stops its training child, which checkpoints; the results that came back are kept. The cancel
is sent again every RECANCEL_S seconds to a task still running (one that was starting when
the first came can miss it); a second signal kills the tasks still running (their results
are lost).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trajplan.errors import TrajplanError
from trajplan.parallel.procs import STOP_SIGNALS, Children, exit_code

CONNECT_TIMEOUT_S = 10.0  # ray.init itself retries an address where nothing listens for minutes
RECANCEL_S = 10.0  # a cancelled task still running after this is cancelled again
_ROOT = str(Path(__file__).resolve().parents[2])  # the folder that holds this trajplan


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A HOST:PORT (or ray://HOST:PORT) address must accept a TCP connection within
    `timeout` seconds, else one TrajplanError; "auto" and "local" are Ray's to resolve."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise TrajplanError(
            f"--ray takes auto, local, HOST:PORT or ray://HOST:PORT, got {address!r}"
        )
    try:
        conn = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except OSError as exc:
        raise TrajplanError(
            f"cannot reach Ray at {address!r} ({exc.strerror or exc}): is its head node up "
            "(`ray start --head`) and RAY_ADDRESS / --ray right?"
        ) from None
    with conn:  # something listens: it must answer as Ray's GCS does (gRPC, HTTP/2)
        if not _speaks_http2(conn, timeout):
            raise TrajplanError(
                f"{address!r} accepts connections but does not answer as a Ray head node "
                "(its GCS port, 6379 by default, speaks gRPC): is RAY_ADDRESS / --ray right?"
            )


def _speaks_http2(conn: socket.socket, timeout: float) -> bool:
    """Whether the peer answers HTTP/2's client preface with a frame (a gRPC server sends its
    SETTINGS first); a service of another kind answers otherwise or not at all, where
    ray.init would retry it for minutes, printing Ray's own log lines."""
    conn.settimeout(timeout)
    try:
        conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        head = b""
        while len(head) < 9:  # a frame header: length (3), type (1), flags (1), stream (4)
            chunk = conn.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:
        return False
    return head[3] == 4  # SETTINGS


def init_ray(address: str) -> Any:
    """The ray module, connected to `address` (see the module docstring) unless it already is."""
    try:
        import ray
    except ImportError:
        raise TrajplanError("--ray needs Ray: pip install 'trajplan[ray]'") from None
    if not ray.is_initialized():
        check_reachable(address)
        try:
            # "local" is a new instance: ray.init() without an address would join a
            # cluster that `ray start` left on this machine (maybe another checkout's)
            with _in_dir(_ROOT):  # Ray puts the caller's folder first on the tasks' path
                ctx = ray.init(address=address, include_dashboard=False,
                               log_to_driver=False, configure_logging=False)  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as exc:
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrajplanError(f"cannot start or reach Ray at {address!r}: {line}") from None
        print(_which_ray(ray, ctx, address), file=sys.stderr, flush=True)
    return ray


@contextmanager
def _in_dir(folder: str) -> Iterator[None]:
    """The working directory is `folder` inside the block. ray.init puts the caller's
    working directory first on every task's sys.path (and a local instance runs its tasks
    there): from a folder that holds another trajplan (the clone's parent, say) each task
    would import that one. In the folder that holds this trajplan, they import this one."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _which_ray(ray: Any, ctx: Any, address: str) -> str:
    """One line: the Ray instance started or joined, and its size."""
    res = ray.cluster_resources()
    size = f"{res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"
    info = getattr(ctx, "address_info", None) or {}
    where = info.get("gcs_address") or address
    if address == "local":
        return f"Ray: started a new local instance at {where} ({size})"
    session = Path(info["session_dir"]).name if info.get("session_dir") else None
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    extra = f", {session}" if session else ""
    return f"Ray: joined the cluster at {where} ({nodes} node{'s' * (nodes != 1)}, {size}{extra})"


def run_on_ray(
    fn: Callable[..., Any],
    tasks: Sequence[tuple],
    address: str,
    cpus: float = 1,
    gpus: float = 0,
) -> tuple[list[Any], int | None]:
    """fn(*task) for every task as a Ray task of `cpus` CPUs and `gpus` GPUs; returns (the
    results in task order, None for a task that returned none; the signal that stopped them
    or None). A failed task cancels the others and is one TrajplanError."""
    ray = init_ray(address)
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_in_task)
    refs = [remote.remote(fn, *t) for t in tasks]
    stop: list[int] = []

    def handle(signum: int, frame: object) -> None:
        stop.append(signum)  # the loop below cancels (no Ray calls inside a handler)

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, handle) for s in STOP_SIGNALS} if main else {}
    results: dict[Any, Any] = {}
    failure: str | None = None
    try:
        pending, cancelled_at, forced = list(refs), None, False
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in ready:
                try:
                    results[ref] = ray.get(ref)
                except (ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError):
                    if not stop and failure is None:
                        failure = "a task was cancelled or its worker died"
                except ray.exceptions.RayError as exc:
                    if not stop and failure is None:
                        failure = _cause(exc)
            if forced or not pending or not (stop or failure):
                continue
            if len(stop) > 1:  # asked twice: kill what still runs
                print(f"killing {len(pending)} Ray task(s) still running", file=sys.stderr)
                for ref in pending:
                    ray.cancel(ref, force=True)
                forced = True
            elif cancelled_at is None or time.monotonic() - cancelled_at >= RECANCEL_S:
                if cancelled_at is None and stop:
                    print(f"stopping {len(pending)} Ray task(s); a second Ctrl-C kills them",
                          file=sys.stderr)  # fmt: skip
                for ref in pending:
                    ray.cancel(ref)
                cancelled_at = time.monotonic()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure is not None:
        raise TrajplanError(f"a Ray task failed: {failure}")
    return [results.get(r) for r in refs], (stop[0] if stop else None)


def _in_task(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) inside a Ray task. Ray's cancel raises KeyboardInterrupt through the main
    thread's Python SIGINT handler and does nothing when there is none: a worker started
    with SIGINT ignored (`ray start` from a script run with `&` or nohup) would never stop."""
    if threading.current_thread() is threading.main_thread():
        if not callable(signal.getsignal(signal.SIGINT)):
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return fn(*args)


def _cause(exc: BaseException) -> str:
    """The first line of what went wrong inside a task (Ray wraps it)."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip()
    if isinstance(cause, TrajplanError):
        return text
    return f"{type(cause).__name__}: {text.splitlines()[-1] if text else ''}"[:300]


def run_command(cmd: Sequence[str], log: str, env: dict[str, str] | None = None) -> int:
    """In a Ray task: run `cmd` as a child (`trajplan.parallel.procs`), its output into `log`;
    returns its exit code. Cancelled (KeyboardInterrupt), it stops the child, which saves, and
    waits."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with Children() as kids:
        child = kids.command(Path(log).stem, cmd, log=Path(log), env=env)
        try:
            kids.wait()
        except KeyboardInterrupt:
            kids.stop_all(signal.SIGINT)
            kids.wait()
    if kids.stop is not None and child.stopped:
        return exit_code(kids.stop)
    return child.returncode or 0
