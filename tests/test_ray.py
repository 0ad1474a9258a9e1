"""Ray as a backend (issue 23): the same calls as the process pool, on a local Ray of two
CPUs started here (the `ray` extra; skipped when Ray is not installed)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import cli, one_line_error

from trajplan.errors import TrajplanError
from trajplan.parallel import ray_backend
from trajplan.parallel.ray_backend import check_reachable, run_on_ray
from trajplan.runs.checkpoint import read_manifest

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray(minari_datasets, tmp_path_factory):
    """A local Ray of 2 CPUs (after the test datasets: its workers inherit
    MINARI_DATASETS_PATH), started in a folder of its own as `ray start` would be (its tasks
    run there); `--ray auto` then uses it."""
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray-start"))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        os.chdir(here)
    yield
    ray.shutdown()


@contextmanager
def sigterm_after(seconds: float) -> Iterator[None]:
    """SIGTERM to this process after `seconds`, and again 20 s later: the second kills the
    Ray tasks still running, so a test whose tasks miss the first fails instead of hanging."""
    again = threading.Timer(20, os.kill, (os.getpid(), signal.SIGTERM))

    def stop() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        again.start()

    first = threading.Timer(seconds, stop)
    first.start()
    try:
        yield
    finally:
        first.cancel()
        again.cancel()


def ray_task_cpu() -> dict[int, float]:
    """CPU seconds used so far by each Ray worker now running a trajplan task (its process
    title is ray::_in_task, trajplan.parallel.ray_backend's wrapper)."""
    cpu = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::_in_task"):
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                cpu[int(proc.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:  # ended meanwhile
            continue
    return cpu


@contextmanager
def sigterm_once_tasks_play(n_tasks: int, cpu_s: float = 2.0) -> Iterator[None]:
    """SIGTERM to this process once `n_tasks` Ray tasks have each used `cpu_s` CPU seconds
    since they began (they have loaded their run and play: CPU time, which busy cores do not
    stretch, instead of a fixed wait), and again 20 s later (the second kills tasks that
    missed the first); after 300 s it is sent anyway, so a hang fails instead of waiting."""
    done = threading.Event()

    def watch() -> None:
        first: dict[int, float] = {}
        deadline = time.monotonic() + 300
        while not done.is_set() and time.monotonic() < deadline:
            now = ray_task_cpu()
            for pid, used in now.items():
                first.setdefault(pid, used)
            if sum(now[p] - first[p] >= cpu_s for p in now) >= n_tasks:
                break
            time.sleep(0.1)
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGTERM)
            if not done.wait(20):
                os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def episodes(folder: Path) -> list[tuple[int, float, int]]:
    (path,) = folder.glob("*/eval.json")
    return [(e["seed"], e["ret"], e["length"]) for e in json.loads(path.read_text())["episodes"]]


def test_ray_eval_equals_process_pool(local_ray, tiny_run: Path, tmp_path: Path) -> None:
    """`eval --ray` plays the episodes of `--workers 2`, episode for episode, and writes the
    same eval folder."""
    args = ("eval", str(tiny_run), "--episodes", "3", "--episode-steps", "6", "--workers", "2",
            "--device", "cpu", "--no-progress")  # fmt: skip
    cli(*args, "--ray", "auto", "--out", str(tmp_path / "ray"))
    cli(*args, "--out", str(tmp_path / "pool"))
    got = episodes(tmp_path / "ray")
    assert [s for s, _, _ in got] == [0, 1, 2] and all(n == 6 for _, _, n in got)
    assert got == episodes(tmp_path / "pool")


def test_ray_eval_keeps_episodes_on_sigterm(local_ray, tiny_run: Path) -> None:
    """SIGTERM during a Ray evaluation: the tasks are cancelled and every episode played
    comes back, marked interrupted."""
    from trajplan.evaluation.evaluate import EvalInterrupted
    from trajplan.evaluation.workers import evaluate_run

    with sigterm_once_tasks_play(2), pytest.raises(EvalInterrupted) as stop:  # endless episodes
        evaluate_run(tiny_run, seeds=[0, 1, 2], episode_steps=1_000_000, workers=2,
                     device="cpu", progress=False, ray="auto")  # fmt: skip
    result = stop.value.result
    assert stop.value.signum == signal.SIGTERM and result.interrupted
    assert [e.seed for e in result.episodes] == [0, 1, 2]
    assert all(e.length > 0 for e in result.episodes)


def test_a_task_that_misses_the_cancel_gets_it_again(local_ray, monkeypatch) -> None:
    """A task can miss the first cancel (here it swallows the KeyboardInterrupt, as one still
    starting up can lose it): the cancel is sent again until the task ends, and its result
    comes back with the signal."""
    monkeypatch.setattr(ray_backend, "RECANCEL_S", 1.0)

    def stubborn(k: int) -> tuple[int, int]:
        missed = 0
        while True:
            try:
                while True:
                    time.sleep(0.01)
            except KeyboardInterrupt:
                missed += 1
                if missed == 3:
                    return k, missed

    with sigterm_after(5):
        results, stop = run_on_ray(stubborn, [(0,), (1,)], "auto")
    assert stop == signal.SIGTERM and results == [(0, 3), (1, 3)]


def test_a_worker_with_sigint_ignored_still_stops(local_ray) -> None:
    """A Ray worker whose SIGINT is ignored (a `ray start` from a background shell) cannot
    take Ray's cancel; each task first restores Python's SIGINT handler."""

    def ignore_sigint() -> int:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return os.getpid()

    def play() -> tuple[int, bool]:
        try:
            while True:
                time.sleep(0.01)
        except KeyboardInterrupt:
            return os.getpid(), True

    poisoned, _ = run_on_ray(ignore_sigint, [()], "auto", cpus=2)
    with sigterm_after(5):
        (result,), stop = run_on_ray(play, [()], "auto", cpus=2)
    assert result == (poisoned[0], True) and stop == signal.SIGTERM  # the same worker


def test_ray_trains_one_task_per_seed(local_ray, halfcheetah_dataset: str, tmp_path) -> None:
    """`train --seeds --ray`: each seed a Ray task, each a complete run."""
    out = tmp_path / "seeds"
    res = cli("train", "--config", "tiny", "--dataset", halfcheetah_dataset, "--seeds", "0,1",
              "--out", str(out), "--max-steps", "3", "--ray", "auto", "--no-progress")  # fmt: skip
    assert "seed 0: done" in res.stdout and "seed 1: done" in res.stdout
    for s in (0, 1):
        _, doc = read_manifest(out / f"seed{s}")
        assert doc["status"] == "finished" and doc["step"] == 3
        assert doc["config"]["train"]["seed"] == s


def test_ray_seeds_checkpoint_on_sigterm(local_ray, halfcheetah_dataset: str, tmp_path) -> None:
    """SIGTERM to `train --seeds --ray` (endless epochs): the tasks are cancelled, each
    seed's training checkpoints (interrupted, step > 0), one line per seed, exit 143."""
    out = tmp_path / "seeds"

    def stop_when_training() -> None:
        def steps(s: int) -> int:
            path = out / f"seed{s}" / "metrics.jsonl"
            lines = path.read_text().splitlines() if path.is_file() else []
            return max((json.loads(ln)["step"] for ln in lines if ln.endswith("}")), default=0)

        while not all(steps(s) >= 10 for s in (0, 1)):
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_training, daemon=True).start()
    res = cli("train", "--config", "tiny", "--dataset", halfcheetah_dataset, "--seeds", "0,1",
              "--out", str(out), "--epochs", "100000", "--set", "train.save_every=100000",
              "--set", "train.save_every_min=null", "--ray", "auto", "--no-progress",
              code=143)  # fmt: skip
    for s in (0, 1):
        _, doc = read_manifest(out / f"seed{s}")
        assert doc["status"] == "interrupted" and doc["step"] >= 10, doc
        assert f"seed {s}: interrupted at step {doc['step']}" in res.stdout.splitlines()


def test_an_unreachable_ray_address_is_one_line_at_once(tiny_run: Path, tmp_path: Path) -> None:
    """ray.init retries an address where nothing listens for minutes; trajplan asks first."""
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    t0 = time.monotonic()
    res = cli("eval", tiny_run, "--episodes", "1", "--ray", f"127.0.0.1:{port}",
              "--out", tmp_path / "ev", code=2, process=True)  # fmt: skip
    one_line_error(res, "cannot reach Ray at")
    assert time.monotonic() - t0 < 60 and not (tmp_path / "ev").exists()
    res = cli("train", "--config", "tiny", "--dataset", "test/halfcheetah/random-v0", "--seeds",
              "0,1", "--ray", f"ray://127.0.0.1:{port}", "--out", tmp_path / "tt", code=2,
              process=True)  # fmt: skip
    one_line_error(res, "cannot reach Ray at")
    assert not (tmp_path / "tt").exists()
    with pytest.raises(TrajplanError, match="HOST:PORT"):
        check_reachable("nowhere")
    check_reachable("auto")  # Ray's to resolve


def test_a_listener_that_is_not_ray_is_one_line() -> None:
    """An address where some other service listens (it accepts, never answers as gRPC):
    ray.init would retry it for minutes with Ray's log lines; trajplan asks it for HTTP/2's
    SETTINGS first and says what is wrong in one line."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        accepted: list[socket.socket] = []
        threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
        t0 = time.monotonic()
        with pytest.raises(TrajplanError, match="does not answer as a Ray head node"):
            check_reachable(f"127.0.0.1:{server.getsockname()[1]}", timeout=2.0)
        assert time.monotonic() - t0 < 10 and len(accepted) == 1
        accepted[0].close()


def test_ray_seeds_from_another_folder(local_ray, halfcheetah_dataset, minari_root, tmp_path):
    """`train --seeds --ray` from a folder that holds another trajplan (the clone's parent,
    say), while a cluster started elsewhere runs on the machine (`ray start` left its
    address): `--ray local` starts a new instance, not that cluster; `--ray ADDRESS` says
    which cluster it joined; either way the tasks import the caller's trajplan and the
    relative --out is the caller's folder, where the printed logs are."""
    here = tmp_path / "work"
    (here / "trajplan").mkdir(parents=True)
    (here / "trajplan" / "__init__.py").write_text('raise ImportError("the wrong trajplan")\n')
    gcs = ray.get_runtime_context().gcs_address
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's sockets go below
    (temp / "ray").mkdir()
    (temp / "ray" / "ray_current_cluster").write_text(gcs)  # what `ray start` leaves
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(MINARI_DATASETS_PATH=str(minari_root), OMP_NUM_THREADS="1", COLUMNS="300",
               RAY_TMPDIR=str(temp))  # fmt: skip
    jobs = lambda: len(ray._private.state.jobs())  # noqa: E731  (drivers that joined it)

    def seeds(which: str, out: str, address: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-P", "-m", "trajplan", "train", "--config", "tiny", "--dataset",
               halfcheetah_dataset, "--seeds", which, "--out", out, "--max-steps", "2",
               "--no-progress", "--ray", address]  # fmt: skip
        return subprocess.run(cmd, cwd=here, env=env, capture_output=True, text=True)

    try:
        before = jobs()
        res = seeds("0", "runs/local", "local")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Ray: started a new local instance at" in res.stderr and gcs not in res.stderr
        assert jobs() == before  # the running cluster saw no driver
        res = seeds("0,1", "runs/joined", gcs)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Ray: joined the cluster at {gcs} (1 node, 2 CPUs" in res.stderr, res.stderr
    assert jobs() == before + 1
    out = here / "runs" / "joined"
    assert f"output in {out}/seed<S>.log" in res.stdout
    for run in (here / "runs" / "local" / "seed0", out / "seed0", out / "seed1"):
        assert read_manifest(run)[1]["step"] == 2
    assert (out / "seed0.log").is_file() and (out / "seed1.log").is_file()
