"""Many processes, nothing lost (issue 23): `train --seeds --jobs` and `eval --workers` under
the signals a terminal, a scheduler or kill -9 send. Real child processes, real signals to
process groups (os.killpg, as a terminal's Ctrl-C reaches its foreground job); no mocks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli

from trajplan.parallel.procs import Children, exit_code
from trajplan.runs.checkpoint import read_manifest

pytestmark = pytest.mark.usefixtures("one_thread")


def trajplan(root: Path, *args: str) -> subprocess.Popen:
    """`python -m trajplan ARGS` as a terminal's foreground job: a process group of its own,
    so os.killpg(proc.pid, sig) is what Ctrl-C (SIGINT) does to it."""
    env = dict(os.environ, MINARI_DATASETS_PATH=str(root), OMP_NUM_THREADS="1", COLUMNS="200")
    cmd = [sys.executable, "-m", "trajplan", *args]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def wait_for(proc: subprocess.Popen, ready, timeout: float = 300.0) -> None:
    """Wait for an event (`ready()`); the timeout only ends a hang, it times nothing."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"did not get there: {proc.communicate()}")
        time.sleep(0.1)


def trained_steps(run: Path) -> int:
    """The last step in RUN/metrics.jsonl (0 before the first log line)."""
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}")]
    return max(steps, default=0)


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def seeds_run(root: Path, dataset: str, out: Path) -> subprocess.Popen:
    """Three seeds, two at a time, each trained without end (the tiny config)."""
    return trajplan(
        root, "train", "--config", "tiny", "--dataset", dataset, "--seeds", "0-2", "--jobs", "2",
        "--out", str(out), "--epochs", "100000", "--set", "train.save_every=100000",
        "--set", "train.save_every_min=null", "--no-progress",
    )  # fmt: skip


@pytest.mark.parametrize(
    "sig, everyone",
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True)],
    ids=["ctrl-c", "sigterm", "scheduler"],
)
def test_seeds_stop_together(sig, everyone, halfcheetah_dataset, minari_root, tmp_path):
    """Ctrl-C or SIGTERM to the seeds' process group (or, as SLURM does, to every process
    at once): the two running seeds each checkpoint (interrupted, step > 0), the third never
    starts, the parent prints one line per seed and exits 128 + signal; a seed then
    resumes from its checkpoint."""
    out = tmp_path / "seeds"
    proc = seeds_run(minari_root, halfcheetah_dataset, out)
    try:
        wait_for(proc, lambda: all(trained_steps(out / f"seed{s}") >= 10 for s in (0, 1)))
        children = [int((out / f"seed{s}" / ".lock").read_text()) for s in (0, 1)]
        os.killpg(proc.pid, sig)
        for pid in children if everyone else ():
            os.kill(pid, sig)
        stdout, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    for s in (0, 1):
        _, doc = read_manifest(out / f"seed{s}")
        assert doc["status"] == "interrupted" and doc["step"] >= 10, doc
        assert f"seed {s}: interrupted at step {doc['step']}" in stdout.splitlines()
        assert (out / f"seed{s}" / "model.safetensors").is_file()
    assert "seed 2: not started" in stdout.splitlines() and not (out / "seed2").exists()
    step = read_manifest(out / "seed0")[1]["step"]
    cli("train", "--resume", "--out", str(out / "seed0"), "--max-steps", str(step + 1))
    assert read_manifest(out / "seed0")[1]["step"] == step + 1


def test_seeds_die_with_their_parent(halfcheetah_dataset, minari_root, tmp_path) -> None:
    """kill -9 of the parent alone: its children get SIGTERM from the kernel
    (PR_SET_PDEATHSIG), checkpoint and exit; none trains on as an orphan."""
    out = tmp_path / "seeds"
    proc = seeds_run(minari_root, halfcheetah_dataset, out)
    try:
        wait_for(proc, lambda: all(trained_steps(out / f"seed{s}") >= 10 for s in (0, 1)))
        pids = [int((out / f"seed{s}" / ".lock").read_text()) for s in (0, 1)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        deadline = time.monotonic() + 60
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.kill()
    assert not any(alive(p) for p in pids), "orphaned children still run"
    for s in (0, 1):
        _, doc = read_manifest(out / f"seed{s}")
        assert doc["status"] == "interrupted" and doc["step"] >= 10, doc
    assert not (out / "seed2").exists()


class Lines:
    """A child's stdout, read line by line by a thread (so a test can wait for a line)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        import threading

        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def steps(self) -> int:
        """Env steps in the last progress line: 'planning on 2 workers: ..., 1,234 env steps'."""
        found = [ln for ln in self.lines if ln.startswith("planning on") and "env steps" in ln]
        if not found:
            return 0
        return int(found[-1].split(" env steps")[0].rsplit(" ", 1)[1].replace(",", ""))

    def playing(self) -> int:
        """Workers that have stepped, from the last progress line: '..., 2 playing'."""
        found = [ln for ln in self.lines if ln.startswith("planning on") and " playing" in ln]
        return int(found[-1].split(" playing")[0].rsplit(" ", 1)[1]) if found else 0


def eval_workers(root: Path, run: Path, *extra: str) -> tuple[subprocess.Popen, Lines]:
    """`eval --workers 2` of endless episodes (no terminal: plain progress every 0.2 s)."""
    os.environ["TRAJPLAN_PROGRESS_EVERY"] = "0.2"
    try:
        proc = trajplan(root, "eval", str(run), "--episodes", "3", "--workers", "2",
                        "--episode-steps", "1000000", "--device", "cpu", *extra)  # fmt: skip
    finally:
        del os.environ["TRAJPLAN_PROGRESS_EVERY"]
    return proc, Lines(proc)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_eval_workers_keep_every_episode(sig, tiny_run, minari_root, tmp_path) -> None:
    """Ctrl-C or SIGTERM to `eval --workers 2`: every episode played so far is saved,
    marked interrupted and not comparable; one line says where; exit 128 + signal."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    proc, out = eval_workers(minari_root, run)
    try:
        wait_for(proc, lambda: out.steps() >= 30 and out.playing() == 2)  # both have begun
        os.killpg(proc.pid, sig)
        proc.wait(timeout=120)
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and err.count("partial results") == 1, err
    (folder,) = (run / "eval").iterdir()
    doc = json.loads((folder / "eval.json").read_text())
    assert doc["interrupted"] and not doc["summary"]["comparable"]
    assert [e["seed"] for e in doc["episodes"]] == [0, 1, 2]
    assert all(e["length"] > 0 for e in doc["episodes"])


def test_eval_workers_die_with_their_parent(tiny_run, minari_root, tmp_path) -> None:
    """kill -9 of the `eval --workers` parent: its workers end too, none blocks forever."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    proc, out = eval_workers(minari_root, run)
    try:
        wait_for(proc, lambda: out.steps() >= 10)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        workers = [int(p) for p in children]
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.kill()
    assert not any(alive(p) for p in workers), "orphaned workers still run"


def test_eval_workers_report_each_episode(tiny_run, tmp_path) -> None:
    """Without a terminal, `eval --workers` prints a line per finished episode, and plays
    the same episodes as one process."""
    args = ("eval", str(tiny_run), "--episodes", "3", "--episode-steps", "5", "--device", "cpu",
            "--threads", "1")  # fmt: skip
    two = cli(*args, "--workers", "2", "--out", str(tmp_path / "two"), process=True)
    lines = [ln for ln in two.stdout.splitlines() if ln.startswith("episode seed")]
    assert sorted(ln.split(":")[0] for ln in lines) == [f"episode seed {s}" for s in range(3)]
    assert lines[-1].endswith(", 3/3 done)")  # "(RUN, k/n done)"
    cli(*args, "--out", str(tmp_path / "one"))
    returns = []
    for folder in ("one", "two"):
        (path,) = (tmp_path / folder).glob("*/eval.json")
        returns.append([e["ret"] for e in json.loads(path.read_text())["episodes"]])
    assert returns[0] == returns[1]


def test_sigterm_ends_evaluation_during_training(halfcheetah_dataset, minari_root, tmp_path):
    """SIGTERM while training evaluates (endless episodes): the evaluation stops within a
    planning step, the checkpoint is taken at that step, exit 143; no eval record."""
    out = tmp_path / "run"
    proc = trajplan(
        minari_root, "train", "--config", "tiny", "--dataset", halfcheetah_dataset, "--out",
        str(out), "--epochs", "1000", "--threads", "1", "--no-progress",
        "--set", "train.eval_every=10", "--set", "train.eval_episodes=2",
        "--set", "train.eval_episode_steps=1000000",
    )  # fmt: skip
    try:
        wait_for(proc, lambda: trained_steps(out) >= 5)  # step 10 evaluates before its log
        time.sleep(3)  # well inside the evaluation (it would take hours)
        os.killpg(proc.pid, signal.SIGTERM)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "--resume" in err
    _, doc = read_manifest(out)
    assert doc["status"] == "interrupted" and doc["step"] == 10, doc
    assert took < 30
    kinds = [json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "eval" not in kinds


def test_children_exit_codes_and_results() -> None:
    """`Children` gathers each call's result or its one-line error, and a command's exit
    code; exit codes say what happened."""
    import operator

    with Children() as kids:
        kids.call("add", operator.add, 2, 3)
        kids.call("div", operator.truediv, 1, 0)
        ended = {c.name: c for c in kids.wait()}
    assert ended["add"].result == 5 and ended["add"].error is None
    assert ended["div"].error == "ZeroDivisionError: division by zero"
    assert ended["div"].returncode == 2
    assert (exit_code(None), exit_code(signal.SIGINT), exit_code(signal.SIGTERM)) == (0, 130, 143)


def test_sigterm_during_collect_write(minari_root: Path, tmp_path: Path) -> None:
    """SIGTERM while `data collect` writes its dataset (its hidden staging folder exists):
    exit 143, no dataset, no staging folder left."""
    root = tmp_path / "datasets"
    root.mkdir()
    proc = trajplan(root, "data", "collect", "--env", "halfcheetah", "--policy", "random",
                    "--steps", "40000", "--dataset-id", "local/halfcheetah/sig-v0")  # fmt: skip
    staging = lambda: list(root.glob(".trajplan-tmp-*"))  # noqa: E731
    try:
        deadline = time.monotonic() + 600
        while not staging() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert staging(), f"the write was not caught: {proc.communicate()}"
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert err.strip() == "stopped: no dataset written"
    assert sorted(p.name for p in root.rglob("*")) == [], "left files behind"


def test_children_ignore_a_trajplan_folder_in_the_working_directory(
    tiny_run, halfcheetah_dataset, minari_root, tmp_path
) -> None:
    """Working from a folder that holds another `trajplan` (say, the clone's parent): the
    `train --seeds --jobs` and `eval --workers` children import the parent's trajplan,
    not the folder's (`python -m` puts the working directory first on sys.path)."""
    here = tmp_path / "work"
    (here / "trajplan").mkdir(parents=True)
    (here / "trajplan" / "__init__.py").write_text('raise ImportError("the wrong trajplan")\n')
    env = dict(os.environ, MINARI_DATASETS_PATH=str(minari_root), OMP_NUM_THREADS="1",
               COLUMNS="200")  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess:  # -P: the parent ignores the folder
        cmd = [sys.executable, "-P", "-m", "trajplan", *args]
        return subprocess.run(cmd, cwd=here, env=env, capture_output=True, text=True)

    res = run("train", "--config", "tiny", "--dataset", halfcheetah_dataset, "--seeds", "0,1",
              "--jobs", "2", "--out", str(tmp_path / "seeds"), "--max-steps", "2",
              "--no-progress")  # fmt: skip
    logs = [(tmp_path / "seeds" / f"seed{s}.log").read_text() for s in (0, 1)]
    assert res.returncode == 0, (res.stderr, logs)
    assert all(read_manifest(tmp_path / "seeds" / f"seed{s}")[1]["step"] == 2 for s in (0, 1))
    res = run("eval", str(tiny_run), "--episodes", "2", "--episode-steps", "3", "--workers", "2",
              "--device", "cpu", "--out", str(tmp_path / "eval"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "wrong trajplan" not in res.stdout + res.stderr
    assert len(list((tmp_path / "eval").glob("*/eval.json"))) == 1
