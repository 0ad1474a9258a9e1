"""Fault injection (issue 12): real files, real processes, real signals; no mocks.

Every fault must end in one of two ways: the work continues correctly, or the command
stops with one line on stderr and exit code 2, leaving every file it found intact and no
half-written file behind.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import cli, one_line_error

from trajplan.runs.checkpoint import read_manifest

TINY = "tiny"  # a shipped config, by name

pytestmark = pytest.mark.usefixtures("one_thread")


# -- helpers -----------------------------------------------------------------------------------


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run directory (the lock file aside) with its bytes."""
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}


def train_args(dataset: str, out: Path, *extra: str) -> tuple[str, ...]:
    return ("train", "--config", TINY, "--dataset", dataset, "--out", str(out),
            "--no-progress", *extra)  # fmt: skip


_SPAWNED: list[subprocess.Popen] = []  # the endless trainings started by the running test


@pytest.fixture(autouse=True)
def _no_training_outlives_its_test():
    """A test that fails before its training child ends (a timeout, an assertion) kills it:
    an endless training left behind would take a core from every later test."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def spawn_training(dataset: str, out: Path, root: Path, *extra: str) -> subprocess.Popen:
    """A real `python -m trajplan train` process (one thread, endless epochs)."""
    env = dict(os.environ, MINARI_DATASETS_PATH=str(root), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "trajplan", *train_args(dataset, out, "--epochs", "100000")]
    cmd += ["--threads", "1", *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _SPAWNED.append(proc)
    return proc


def wait_for(proc: subprocess.Popen, ready, timeout: float = 300.0) -> None:
    """Wait for an event (`ready()`); the timeout only ends a hang, it times nothing."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"training did not get there: {proc.communicate()}")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (progress that busy cores do not stretch)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metrics_steps(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if '"kind": "train"' in line]


def status(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


# -- 1. divergence -----------------------------------------------------------------------------


def test_config_errors_up_front(halfcheetah_dataset: str, tmp_path: Path) -> None:
    """Values that cannot train are refused before anything is loaded or written."""
    out = tmp_path / "run"
    for extra, words in (
        (("--lr", "inf"), ("train.lr", "finite")),
        (("--lr", "nan"), ("train.lr", "finite")),
        (("--set", "model.dropout=2"), ("model.dropout", "[0, 1)")),
        (("--set", "model.n_head=3"), ("model.n_embd", "multiple")),
        (("--set", "model.n_head=0"), ("model.n_head",)),
        (("--set", "train.save_every_min=0"), ("save_every_min",)),
    ):
        one_line_error(cli(*train_args(halfcheetah_dataset, out, *extra), code=2), *words)
        assert not out.exists()


def test_divergence_stops_without_saving(halfcheetah_dataset: str, tmp_path: Path):
    """lr 1e30: the loss turns NaN in the first epoch; the run stops with one line and
    never writes weights (before, it ended 'finished' with every tensor NaN)."""
    out = tmp_path / "run"
    one_line_error(
        cli(*train_args(halfcheetah_dataset, out, "--lr", "1e30"), code=2),
        "diverged",
        "no checkpoint was written",
        "train.lr",
    )
    assert not any(out.glob("*.safetensors")) and not (out / "state.pt").exists()
    assert status(out)["status"] == "starting"


def test_divergence_keeps_last_good_checkpoint(halfcheetah_dataset: str, tmp_path):
    """A checkpoint, then NaN weights (a real state.pt with one NaN, as an overflow would
    leave): the resumed run stops at its first log point; the checkpoint stays as it was."""
    out = tmp_path / "run"
    cli(*train_args(halfcheetah_dataset, out, "--epochs", "1"))
    state = torch.load(out / "state.pt", weights_only=True)
    state["model"]["ln_f.weight"][0] = float("nan")
    torch.save(state, out / "state.pt")
    before = snapshot(out)
    one_line_error(
        cli("train", "--resume", "--out", str(out), "--epochs", "3", code=2),
        "diverged at step",
        "last good checkpoint (step 4) is kept",
    )
    after = snapshot(out)
    assert after == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_non_finite_weights_refused_on_load(tiny_run: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    weights = load_file(str(run / "model.safetensors"))
    weights["head"][0, 0, 0] = float("inf")
    save_file(weights, str(run / "model.safetensors"))
    one_line_error(
        cli("plan", "--checkpoint", str(run), "--max-steps", "1", "--device", "cpu", code=2),
        "model.safetensors",
        "NaN or inf",
    )
    assert not list(run.glob("plan-*.json"))


# -- 2. data fingerprint -----------------------------------------------------------------------


def test_resume_on_changed_data_is_refused(tmp_path: Path, monkeypatch) -> None:
    """Re-collect the dataset (another seed), then --resume: refused with one line, files
    untouched; --allow-data-change continues with the run's own bins."""
    from conftest import random_rollouts

    from trajplan.data.transitions import create_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    ds = "test/halfcheetah/recollected-v0"

    def collect(seed: int) -> None:
        eps = random_rollouts("HalfCheetah-v5", 3, 40, seed)
        create_dataset(ds, eps, "HalfCheetah-v5", seeds=[seed + i for i in range(3)], force=True)

    collect(0)
    out = tmp_path / "run"
    cli(*train_args(ds, out, "--epochs", "1"))
    assert status(out)["data_fingerprint"].startswith("sha256:")
    # unchanged data resumes
    cli("train", "--resume", "--out", str(out), "--epochs", "2")
    collect(1)
    before = snapshot(out)
    one_line_error(
        cli("train", "--resume", "--out", str(out), "--epochs", "3", code=2),
        "changed since the run began",
        "same size, other contents",
        "--allow-data-change",
    )
    assert snapshot(out) == before
    args = ("train", "--resume", "--out", str(out), "--epochs", "3", "--allow-data-change")
    cli(*args)
    after = snapshot(out)
    assert after["discretizer.safetensors"] == before["discretizer.safetensors"]
    assert status(out)["data_fingerprint"] != json.loads(before["config.json"])["data_fingerprint"]
    assert status(out)["epoch"] == 3


# -- 3. + 6. lock, SIGTERM, time-based checkpoints, kill -9 ------------------------------------


def test_lock_then_sigterm(halfcheetah_dataset, minari_root, tmp_path) -> None:
    """A second training into a busy --out fails at once; SIGTERM checkpoints like Ctrl-C
    (exit 143, status 'interrupted'); then the lock is free and the run resumes."""
    out = tmp_path / "run"
    extra = ("--set", "train.save_every=1000", "--set", "train.save_every_min=null")
    proc = spawn_training(halfcheetah_dataset, out, minari_root, *extra)
    try:
        wait_for(proc, lambda: (out / "metrics.jsonl").is_file() and metrics_steps(out))
        before = snapshot(out)
        busy = ("in use by another process", f"pid {proc.pid}")
        one_line_error(cli(*train_args(halfcheetah_dataset, out), code=2), *busy)
        # at once, before the data: a dataset that does not exist is never looked at
        one_line_error(cli(*train_args("test/halfcheetah/absent-v0", out), code=2), *busy)
        resume = ("train", "--resume", "--out", str(out), "--max-steps", "1")
        one_line_error(cli(*resume, code=2), *busy)
        assert not (out / "model.safetensors").exists() and before.keys() <= snapshot(out).keys()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "--resume" in err and "Traceback" not in err
    doc = status(out)
    assert doc["status"] == "interrupted" and doc["step"] > 0
    step = doc["step"]
    args = ("train", "--resume", "--out", str(out), "--max-steps", str(step + 2))
    cli(*args)
    assert status(out)["step"] == step + 2
    assert metrics_steps(out) == sorted(set(metrics_steps(out)))  # no interleaved lines


def test_kill_9_loses_minutes_not_epochs(halfcheetah_dataset, minari_root, tmp_path):
    """train.save_every_min checkpoints mid-epoch by the clock; after kill -9 the run
    resumes from the newest one, and orphaned temporary files are cleaned up."""
    out = tmp_path / "run"
    extra = ("--set", "train.save_every=1000", "--set", "train.save_every_min=0.0005")
    proc = spawn_training(halfcheetah_dataset, out, minari_root, *extra)
    try:
        wait_for(proc, lambda: (out / "state.pt").is_file() and status(out)["step"] >= 6)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    doc = status(out)
    assert doc["status"] == "running" and doc["epoch"] < 1000  # saved long before save_every
    orphan = out / ".model.safetensors.abc123.tmp"  # as a kill mid-write leaves one
    orphan.write_bytes(b"half")
    # the resume reads only state.pt; a kill between a checkpoint's renames (weights,
    # state.pt, then config.json) leaves config.json one checkpoint behind it
    step = torch.load(out / "state.pt", weights_only=True)["step"]
    assert read_manifest(out)[1]["step"] <= step
    args = ("train", "--resume", "--out", str(out), "--max-steps", str(step + 1))
    cli(*args)
    assert status(out)["step"] == step + 1 and not orphan.exists()


def test_timed_checkpoints_keep_resume_exact(halfcheetah_dataset: str, tmp_path: Path) -> None:
    """A checkpoint after every step (save_every_min tiny) changes nothing in the result."""
    from safetensors.torch import load_file

    from trajplan.configs import load_config
    from trajplan.training.loop import train

    def run(name: str, minutes: float | None) -> dict[str, torch.Tensor]:
        cfg = load_config(TINY)
        cfg.dataset = halfcheetah_dataset
        cfg.train.max_steps, cfg.train.save_every_min = 6, minutes
        return load_file(str(train(cfg, tmp_path / name, progress=False) / "model.safetensors"))

    a, b = run("plain", None), run("timed", 1e-9)
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- 7. dead-end run folders -------------------------------------------------------------------


def test_dead_end_folder_restarts(halfcheetah_dataset, minari_root, tmp_path) -> None:
    """kill -9 before the first checkpoint: both --resume (with the recorded config) and a
    plain train into the same --out start over; stale metric lines are dropped."""
    out = tmp_path / "run"
    extra = ("--set", "train.save_every=1000", "--set", "train.save_every_min=null")
    proc = spawn_training(halfcheetah_dataset, out, minari_root, *extra)
    try:
        wait_for(proc, lambda: (out / "metrics.jsonl").is_file() and len(metrics_steps(out)) > 2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert status(out)["status"] == "starting" and not (out / "state.pt").exists()
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    cli("train", "--resume", "--out", str(out), "--max-steps", "3")
    assert status(out)["step"] == 3 and metrics_steps(out) == [3]  # log_every 5: the end
    cli(*train_args(halfcheetah_dataset, copy, "--max-steps", "5"))
    assert status(copy)["step"] == 5 and metrics_steps(copy) == [5]
    # killed while loading its data: only the lock file is there
    early = tmp_path / "early"
    early.mkdir()
    (early / ".lock").write_text("12345\n")
    one_line_error(
        cli("train", "--resume", "--out", str(early), code=2),
        "train into it again without --resume",
    )
    cli(*train_args(halfcheetah_dataset, early, "--max-steps", "1"))
    # a folder that is not a dead end is still protected
    one_line_error(
        cli(*train_args(halfcheetah_dataset, copy), code=2), "already exists", "--resume"
    )


# -- 4. + 5. eval and plan outputs -------------------------------------------------------------


def test_eval_outputs_never_clobber(tiny_run: Path, tmp_path: Path) -> None:
    """Two runs named alike, evaluated twice into one --out, and twice into RUN/eval: four
    and two distinct folders whose names say what was evaluated."""
    a, b = tmp_path / "A" / "run", tmp_path / "B" / "run"
    shutil.copytree(tiny_run, a)
    shutil.copytree(tiny_run, b)
    quick = ("--episodes", "1", "--episode-steps", "2", "--device", "cpu")
    out = tmp_path / "X"
    for _ in range(2):
        cli("eval", str(a), str(b), "--out", str(out), *quick)
    folders = sorted(p.name for p in out.iterdir())
    assert len(folders) == 4 and all((out / f / "eval.json").is_file() for f in folders)
    assert sum(f.startswith("A_run-1ep-seed0-h2-b4-capped2-") for f in folders) == 2
    assert sum(f.startswith("B_run-1ep-seed0-h2-b4-capped2-") for f in folders) == 2
    cli("eval", str(a), *quick)
    cli("eval", str(a), *quick, "--beam-width", "2", "--seed", "3")
    names = sorted(p.name for p in (a / "eval").iterdir())
    assert len(names) == 2 and names[0].startswith("1ep-seed0-h2-b4-capped2-")
    assert names[1].startswith("1ep-seed3-h2-b2-capped2-")


def test_outputs_checked_before_the_work(tiny_run: Path, tmp_path: Path) -> None:
    """An output that cannot be written fails in the first second, not after the episodes;
    `plan --checkpoint RUN/model.safetensors` writes beside the run."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cpu0 = time.process_time()  # CPU, not wall-clock time: busy cores do not stretch it
    full = ("--episodes", "50", "--device", "cpu")  # minutes of CPU work if it started
    one_line_error(
        cli("eval", str(run), "--out", str(blocker / "sub"), *full, code=2),
        "cannot write",
        "a-file",
    )
    one_line_error(
        cli("plan", "--checkpoint", str(run), "--out", str(blocker / "p.json"), code=2),
        "cannot write",
        "a-file",
    )
    assert time.process_time() - cpu0 < 20 and not (run / "eval").exists()
    pytest.importorskip("imageio_ffmpeg")
    one_line_error(
        cli("plan", "--checkpoint", str(run), "--video", str(tmp_path / "v"), code=2),
        "must end in one of",
    )
    one_line_error(
        cli("plan", "--checkpoint", str(run), "--video", str(blocker / "v.mp4"), code=2),
        "cannot write",
        "video folder",
    )
    weights = run / "model.safetensors"
    args = ("plan", "--checkpoint", str(weights), "--max-steps", "2", "--device", "cpu")
    cli(*args)
    assert (run / "plan-seed0.json").is_file()


def test_eval_sigterm_writes_partial_results(tiny_run: Path, minari_root: Path, tmp_path) -> None:
    """SIGTERM mid-evaluation: the episodes so far are saved, marked interrupted."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    env = dict(os.environ, MINARI_DATASETS_PATH=str(minari_root), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "trajplan", "eval", str(run), "--episodes", "2",
           "--episode-steps", "1000000", "--device", "cpu", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(proc, lambda: (run / "eval").is_dir() and any((run / "eval").iterdir()))
        busy = cpu_seconds(proc.pid) + 3  # load the model, make the envs, play some steps
        wait_for(proc, lambda: cpu_seconds(proc.pid) >= busy, timeout=120)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "partial results" in err and "Traceback" not in err
    (folder,) = (run / "eval").iterdir()
    doc = json.loads((folder / "eval.json").read_text())
    assert doc["interrupted"] and not doc["summary"]["comparable"]
    assert len(doc["episodes"]) == 2 and all(e["length"] > 0 for e in doc["episodes"])
    assert (folder / "eval.png").is_file()


# -- 8. tracebacks that became one line ----------------------------------------------------------


def copy_dataset(src_root: Path, dst_root: Path, src_id: str, dst_id: str) -> Path:
    """A copy of a local Minari dataset under another id (its metadata renamed too)."""
    dst = dst_root / dst_id
    shutil.copytree(src_root / src_id, dst)
    meta = dst / "data" / "metadata.json"
    meta.write_text(meta.read_text().replace(src_id, dst_id))
    return dst


def test_corrupt_hdf5(minari_root: Path, halfcheetah_dataset, tmp_path, monkeypatch):
    """Truncated or garbage data files: `data info` and `train` say so in one line; no run
    directory is left behind."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    for name, damage in (
        ("truncated", lambda b: b[: len(b) // 3]),
        ("garbage", lambda b: os.urandom(len(b))),
    ):
        ds = f"test/halfcheetah/{name}-v0"
        h5 = copy_dataset(minari_root, root, halfcheetah_dataset, ds) / "data" / "main_data.hdf5"
        h5.write_bytes(damage(h5.read_bytes()))
        one_line_error(cli("data", "info", ds, code=2), "truncated or corrupt", name)
        out = tmp_path / f"run-{name}"
        one_line_error(cli(*train_args(ds, out), code=2), "truncated or corrupt")
        assert not out.exists()


def test_minari_path_is_a_file(tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(blocker))
    one_line_error(cli("data", "list", code=2), "is a file, not a folder")
    collect = ("data", "collect", "--env", "hopper", "--policy", "random", "--steps", "50",
               "--dataset-id", "local/hopper/x-v0")  # fmt: skip
    one_line_error(cli(*collect, code=2), "is a file, not a folder")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(blocker / "sub"))
    one_line_error(cli(*collect, code=2), "cannot write", "Not a directory")


def test_unknown_recorded_env(minari_root, halfcheetah_dataset, tmp_path, monkeypatch):
    """A dataset recorded in an env that is not installed is refused before training (it
    used to train, then fail at eval)."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    ds = "test/mystery/random-v0"
    meta = copy_dataset(minari_root, root, halfcheetah_dataset, ds) / "data" / "metadata.json"
    meta.write_text(meta.read_text().replace("HalfCheetah-v5", "NoSuchEnv-v0"))
    out = tmp_path / "run"
    one_line_error(cli(*train_args(ds, out), code=2), "NoSuchEnv-v0", "not installed")
    assert not out.exists()


def test_window_too_large_for_memory(halfcheetah_dataset: str, tmp_path: Path) -> None:
    """data.seq_len 5000 (125k tokens per window) is refused from the config, before the
    OOM killer would end it."""
    out = tmp_path / "run"
    one_line_error(
        cli(*train_args(halfcheetah_dataset, out, "--set", "data.seq_len=5000"), code=2),
        "GiB",
        "data.seq_len 5000",
    )
    assert not out.exists()


def test_did_you_mean(halfcheetah_dataset: str, tmp_path: Path) -> None:
    one_line_error(
        cli("train", "--env", "halfcheeta", "--out", str(tmp_path / "r"), code=2),
        "did you mean 'halfcheetah'",
    )
    typo = halfcheetah_dataset.replace("random", "randm")
    one_line_error(
        cli("data", "info", typo, code=2), f"did you mean {halfcheetah_dataset!r}", "data download"
    )
    local = cli("data", "info", "local/halfcheetah/random-v0", code=2)
    one_line_error(local, "data collect")
    assert "download" not in local.stderr  # local/ ids are never on the remote


def test_data_list_names_unreadable_datasets(minari_root, halfcheetah_dataset, tmp_path,
                                             monkeypatch) -> None:  # fmt: skip
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    copy_dataset(minari_root, root, halfcheetah_dataset, halfcheetah_dataset)
    bad = copy_dataset(minari_root, root, halfcheetah_dataset, "test/halfcheetah/broken-v0")
    (bad / "data" / "metadata.json").write_text("{not json")
    cut = copy_dataset(minari_root, root, halfcheetah_dataset, "test/halfcheetah/cut-v0")
    h5 = cut / "data" / "main_data.hdf5"
    h5.write_bytes(h5.read_bytes()[:1000])
    from trajplan.cli.options import console

    monkeypatch.setattr(console, "width", 200)  # ids wrap in narrower table cells
    shown = cli("data", "list").stdout
    assert halfcheetah_dataset in shown
    assert "2 unreadable: test/halfcheetah/broken-v0, test/halfcheetah/cut-v0" in " ".join(
        shown.split()
    )


# -- disk full, file modes, run metadata ------------------------------------------------------


def limit_file_size(limit: int):
    """preexec_fn: no file of the child may grow past `limit` bytes (writes then fail with
    EFBIG, as on a full disk; SIGXFSZ is ignored so the write error is what the child sees)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if limit != resource.RLIM_INFINITY:  # infinity: only the signal (prlimit later)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_full_disk_keeps_the_last_checkpoint(halfcheetah_dataset, minari_root, tmp_path):
    """A checkpoint that cannot be written is one line (exit 2), renames nothing, leaves no
    temporary file: the previous checkpoint stays whole and resumable. The limit is set on
    the running process (prlimit) once it trains: a limit set before it starts is refused
    up front (tests/test_guards.py)."""
    out = tmp_path / "run"
    cli(*train_args(halfcheetah_dataset, out, "--epochs", "1"))
    before = snapshot(out)
    env = dict(os.environ, MINARI_DATASETS_PATH=str(minari_root), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "trajplan", "train", "--resume", "--out", str(out),
           "--epochs", "100000", "--set", "train.save_every=50", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=limit_file_size(resource.RLIM_INFINITY),
    )  # fmt: skip
    wait_for(proc, lambda: max(metrics_steps(out), default=0) > 4)  # next save: step 200
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (100_000, 100_000))
    stdout, stderr = proc.communicate(timeout=300)
    res = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    one_line_error(res, "cannot write", "last good checkpoint (step 4)")
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k != "metrics.jsonl"} == {
        k: v for k, v in before.items() if k != "metrics.jsonl"
    }
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    cli("train", "--resume", "--out", str(out), "--epochs", "2")
    assert status(out)["epoch"] == 2


def test_files_respect_the_umask(tiny_run: Path, tmp_path: Path) -> None:
    """Atomic writes give the umask's mode (mkstemp alone made every run file 0600)."""
    from trajplan.runtime import atomic_write

    assert (tiny_run / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~current_umask()
    for umask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(umask)
        try:
            path = atomic_write(tmp_path / f"f{umask:o}", lambda p: p.write_text("x"))
        finally:
            os.umask(old)
        assert path.stat().st_mode & 0o777 == mode


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_best_weights_are_described(halfcheetah_dataset: str, tmp_path: Path) -> None:
    """best.safetensors always has a step in config.json: the first checkpoint while no
    epoch has ended (best_loss null), then the best epoch's end."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    cli(*train_args(halfcheetah_dataset, out, "--max-steps", "2"))
    doc = status(out)
    assert (doc["best_loss"], doc["best_epoch"], doc["best_step"]) == (None, -1, 2)
    best, last = (load_file(str(out / f"{n}.safetensors")) for n in ("best", "model"))
    assert all(torch.equal(best[k], last[k]) for k in last)
    args = ("train", "--resume", "--out", str(out), "--epochs", "2", "--max-steps", "8")
    cli(*args)
    doc = status(out)
    assert doc["best_epoch"] in (0, 1) and doc["best_step"] == 4 * (doc["best_epoch"] + 1)


def test_unwritable_out(halfcheetah_dataset: str, tmp_path: Path) -> None:
    """--out that is a file, below a file, or read-only: one line before any data is read;
    a failed start leaves an existing empty --out empty."""
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(
        cli(*train_args(halfcheetah_dataset, empty, "--set", "model.obs_dim=3"), code=2), "obs_dim"
    )
    assert list(empty.iterdir()) == []
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    one_line_error(cli(*train_args(halfcheetah_dataset, blocker), code=2), "is a file")
    one_line_error(
        cli(*train_args(halfcheetah_dataset, blocker / "run"), code=2),
        "cannot write run directory",
        "Not a directory",
    )
    assert blocker.read_text() == "keep me"
    if os.geteuid() != 0:  # root writes anywhere: the mode test needs a normal user
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        one_line_error(
            cli(*train_args(halfcheetah_dataset, ro / "run"), code=2),
            "cannot write run directory",
            "Permission denied",
        )


# -- issue 30 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iql_run(minari_datasets, tmp_path_factory, one_thread) -> Path:
    """A finished IQL run of 20 updates on the HalfCheetah fixture (the tiny TT run's data)."""
    out = tmp_path_factory.mktemp("iql") / "iql"
    args = ("--dataset", minari_datasets.halfcheetah, "--steps", "20", "--hidden", "16,16")
    cli("iql", *args, "--out", out, "--no-progress")
    return out


def poison(path: Path, value: float) -> None:
    """Put `value` (NaN or inf) into the first float of a weights file's first matrix,
    keeping its metadata: what a diverged training would have saved."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(path), framework="numpy") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    name = next(k for k in sorted(tensors) if tensors[k].ndim == 2)
    tensors[name].flat[0] = value
    save_file(tensors, str(path), metadata=meta)


def test_non_finite_iql_weights_refused_on_load(tiny_run, iql_run, tmp_path) -> None:
    """NaN in an IQL actor (eval exited 0 with return nan) or inf in its critic (TT + Q
    exited 0 with normal-looking scores): loading refuses them with one line, nothing played
    or written; the same for a BC actor given as --prior."""
    bad = tmp_path / "bad"
    shutil.copytree(iql_run, bad)
    poison(bad / "policy.actor.safetensors", float("nan"))
    quick = ("--episodes", "1", "--episode-steps", "3", "--device", "cpu", "--no-progress")
    res = cli("eval", bad, *quick, "--out", tmp_path / "ev", code=2)
    one_line_error(res, "policy.actor.safetensors", "NaN or inf")
    shutil.copy(iql_run / "policy.actor.safetensors", bad / "policy.actor.safetensors")
    poison(bad / "critic.safetensors", float("inf"))
    res = cli("eval", tiny_run, "--critic", bad, *quick, "--out", tmp_path / "ev", code=2)
    one_line_error(res, "critic.safetensors", "NaN or inf")
    plan = ("plan", "--checkpoint", tiny_run, "--max-steps", "2", "--device", "cpu")
    res = cli(*plan, "--prior", iql_run / "policy.actor.safetensors", "--critic", bad,
              "--out", tmp_path / "p.json", code=2)  # fmt: skip
    one_line_error(res, "critic.safetensors", "NaN or inf")
    assert not (tmp_path / "ev").exists() or leftovers(tmp_path / "ev") == []
    assert not (tmp_path / "p.json").exists()


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_planning_settings_refused_on_policy_runs(iql_run, tmp_path) -> None:
    """--critic, --prior, --beam-width or --set plan.* on BC or IQL runs alone (they act,
    no search) were silently ignored; refused with one line as --action-noise is on TT."""
    quick = ("--episodes", "1", "--episode-steps", "2", "--out", tmp_path / "ev")
    for extra, words in (
        (("--critic", iql_run), ("--critic: planning settings", "is an IQL run", "drop it")),
        (("--prior", iql_run, "--beam-width", "4"), ("--beam-width --prior", "drop them")),
        (("--set", "plan.horizon=3"), ("--set plan.horizon=3",)),
    ):
        one_line_error(cli("eval", iql_run, *extra, *quick, code=2), *words)
    assert leftovers(tmp_path) == []


def test_critic_with_a_goal_conditioned_model(halfcheetah_dataset, iql_run, tmp_path) -> None:
    """A goal-conditioned TT run with --critic (it failed at its first plan naming tensor
    shapes, or planned towards its goal scored by a critic that does not see it): one line
    naming the cause, before the episode."""
    run = tmp_path / "gc"
    cli(*train_args(halfcheetah_dataset, run, "--goal", "0,1", "--epochs", "1"))
    plan = ("plan", "--checkpoint", run, "--goal", "0,0", "--max-steps", "2", "--device", "cpu")
    res = cli(*plan, "--critic", iql_run, "--out", tmp_path / "p.json", code=2)
    one_line_error(res, "--critic", "goal-conditioned model (goal dims 0,1)", "without --goal")
    assert not (tmp_path / "p.json").exists()


def test_messages_name_the_cause(tiny_run, iql_run, minari_root, halfcheetah_dataset, tmp_path,
                                 monkeypatch):  # fmt: skip
    """Messages that misled: predict suggested --horizon 0 (which it refuses), a dataset
    folder without metadata.json said "No data found", an IQL config of another format
    named the TT format, and --set plan.horizon.x=3 was echoed as horizon.x=3."""
    from conftest import random_rollouts

    from trajplan.data.transitions import create_dataset

    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    short = "test/halfcheetah/onestep-v0"
    create_dataset(short, random_rollouts("HalfCheetah-v5", 3, 1, 7), "HalfCheetah-v5",
                   seeds=[7, 8, 9])  # fmt: skip
    res = cli("predict", tiny_run, "--dataset", short, "--out", tmp_path / "p", code=2)
    one_line_error(res, "has 1 step: nothing to predict", "longer episodes")
    assert "--horizon 0" not in res.stderr and not (tmp_path / "p").exists()
    bare = "test/halfcheetah/nometa-v0"
    (root / bare / "data").mkdir(parents=True)
    src = minari_root / halfcheetah_dataset / "data" / "main_data.hdf5"
    shutil.copy(src, root / bare / "data")
    res = cli(*train_args(bare, tmp_path / "run"), code=2)
    one_line_error(res, "data has no metadata.json", "main_data.hdf5", "again")
    other = tmp_path / "iql-next"
    shutil.copytree(iql_run, other)
    doc = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**doc, "format": "trajplan-iql/99"}))
    res = cli("eval", other, "--episodes", "1", code=2)
    one_line_error(res, "format 'trajplan-iql/99'", "IQL run", "another version")
    res = cli("eval", tiny_run, "--set", "plan.horizon.x=3", "--episodes", "1", code=2)
    one_line_error(res, "--set 'plan.horizon.x=3'", "'horizon' is a key, not a section")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopped_while_starting_resumes(sig, halfcheetah_dataset, minari_root, tmp_path) -> None:
    """SIGTERM or Ctrl-C while a training loads its data (it holds its folder, no config.json
    yet): `train --resume --out RUN` starts over with the config it was given, as the docs
    promise (it said "train again" after SIGTERM and "not found" after Ctrl-C)."""
    out = tmp_path / "run"
    proc = spawn_training(halfcheetah_dataset, out, minari_root)
    wait_for(proc, lambda: (out / ".lock").is_file(), timeout=120)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    assert not (out / "config.json").exists(), "stopped too late: it had begun"
    cli("train", "--resume", "--out", out, "--max-steps", "3", "--no-progress")
    doc = status(out)
    assert doc["status"] == "finished" and doc["step"] == 3
    assert doc["config"]["dataset"] == halfcheetah_dataset
    assert not (out / ".config-given.json").exists()
