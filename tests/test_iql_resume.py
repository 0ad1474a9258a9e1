"""IQL runs that stop and continue (trajplan.baselines.iql_state): a real SIGTERM and a real
kill -9 of a real `trajplan iql` process, then `--resume`, end at the same weights as a run
never stopped (torch.equal); resume refuses other settings and changed data in one line;
snapshots are the run's weights at their step and load as runs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import cli, one_line_error

from trajplan.baselines.iql import IQLConfig, Saving, train_iql
from trajplan.errors import TrajplanError
from trajplan.runs.iql import load_iql

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 300
ARGS = ("--steps", str(STEPS), "--hidden", "16", "--batch-size", "32", "--snapshot-every", "100",
        "--no-progress", "--threads", "1")  # fmt: skip
RUN_FILES = ("policy.actor.safetensors", "critic.safetensors")


def weights(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a run's actor and critic files, by file and name."""
    from safetensors.torch import load_file

    return {f"{n}:{k}": v for n in RUN_FILES for k, v in load_file(str(run / n)).items()}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and len(wa) > 10
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [
        k for k in wa if not torch.equal(wa[k], wb[k])
    ]


def stats(run: Path) -> list[dict[str, Any]]:
    """The metrics lines without their wall times."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in x.items() if k != "wall_s"} for x in lines]


def saved(run: Path) -> dict[str, Any]:
    return torch.load(run / "state.pt", map_location="cpu", weights_only=True)


def spawn(dataset: str, out: Path, root: Path, *extra: str) -> subprocess.Popen:
    """A real `python -m trajplan iql` process, in a process group of its own."""
    env = dict(os.environ, MINARI_DATASETS_PATH=str(root), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "trajplan", "iql", "--dataset", dataset, "--out", str(out),
           *ARGS, *extra]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip


def wait_for(proc: subprocess.Popen, ready, timeout: float = 300.0) -> None:
    """Wait for an event (`ready()`); the timeout only ends a hang, it times nothing."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"iql did not get there: {proc.communicate()}")
        time.sleep(0.02)


def state_step(run: Path) -> int:
    try:
        return int(saved(run)["step"])
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1


@pytest.fixture(scope="module")
def uninterrupted(minari_datasets, tmp_path_factory) -> Path:
    """The reference: the same run, never stopped (one thread, as the children)."""
    out = tmp_path_factory.mktemp("iql") / "plain"
    cli("iql", "--dataset", minari_datasets.halfcheetah, "--out", str(out), *ARGS)
    return out


def test_sigterm_then_resume_ends_at_the_same_weights(
    uninterrupted: Path, halfcheetah_dataset: str, minari_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    proc = spawn(halfcheetah_dataset, out, minari_root)
    try:
        wait_for(proc, lambda: (out / "state.pt").is_file())  # its first checkpoint
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "--resume" in err and "Traceback" not in err
    state = saved(out)
    assert state["status"] == "interrupted" and 0 < state["step"] < STEPS, state["step"]
    assert not (out / "config.json").exists()  # unfinished: not a run yet
    one_line_error(cli("eval", str(out), "--episodes", "1", code=2))
    with pytest.raises(TrajplanError, match="unfinished IQL run"):
        load_iql(out)
    one_line_error(
        cli("iql", "--dataset", halfcheetah_dataset, "--out", str(out), *ARGS, code=2),
        "already exists", "continue it with --resume",
    )  # fmt: skip
    res = cli("iql", "--out", str(out), "--resume", "--no-progress", "--threads", "1")
    assert "wrote IQL run" in res.stdout
    assert_same_weights(out, uninterrupted)
    assert stats(out) == stats(uninterrupted)  # the lines from before the stop kept too
    for k in (100, 200, 300):  # snapshots before and after the stop
        assert_same_weights(
            out / "snapshots" / f"step_{k}", uninterrupted / "snapshots" / f"step_{k}"
        )
    assert not (out / "state.pt").exists()
    again = cli("iql", "--out", str(out), "--resume", "--steps", "5")
    assert again.stdout.strip() == f"{out} is finished: nothing to resume"


def test_kill_9_loses_only_the_time_since_the_last_checkpoint(
    uninterrupted: Path, halfcheetah_dataset: str, minari_root: Path, tmp_path: Path
) -> None:
    """State every few milliseconds by the clock (the step rule never due): after kill -9
    the run resumes from the newest one, cleans the orphaned temporary files, and ends
    where the uninterrupted run did."""
    out = tmp_path / "run"
    proc = spawn(halfcheetah_dataset, out, minari_root, "--save-every", "100000",
                 "--save-every-min", "0.0002")  # fmt: skip
    try:
        wait_for(proc, lambda: state_step(out) >= 20)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    state = saved(out)
    assert state["status"] == "running" and 20 <= state["step"] < STEPS
    orphan = out / ".critic.safetensors.abc123.tmp"  # as a kill mid-write leaves one
    orphan.write_bytes(b"half")
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    cli("iql", "--out", str(out), "--resume", "--no-progress", "--threads", "1")
    assert_same_weights(out, uninterrupted)
    assert not orphan.exists()

    # resume refuses what would not continue the same run, in one line, touching nothing
    kept = ("state.pt", "metrics.jsonl")
    before = {n: (copy / n).read_bytes() for n in kept}
    for extra, words in (
        (("--steps", "700"), ("cannot resume", "steps 300 -> 700", "leave them out")),
        (("--seed", "3"), ("seed 0 -> 3",)),
        (("--dataset", "test/hopper/random-v0"), ("it trains on test/halfcheetah/random-v0",)),
        (("--save-every", "0"), ("--save-every must be at least 1",)),
    ):
        one_line_error(cli("iql", "--out", str(copy), "--resume", *extra, code=2), *words)
    from trajplan.data.transitions import load_episodes

    ep = load_episodes(halfcheetah_dataset)
    other = dataclasses.replace(ep, rewards=ep.rewards * 2)  # same size, other contents
    with pytest.raises(TrajplanError, match="changed since the run began"):
        train_iql(None, copy, progress=False, resume=True, episodes=other)
    assert {n: (copy / n).read_bytes() for n in kept} == before
    assert not list(copy.glob(".*.tmp"))  # the orphans cleaned, none left
    one_line_error(cli("iql", "--out", str(tmp_path / "none"), "--resume", code=2), "no such run")
    one_line_error(cli("iql", "--out", str(tmp_path / "new"), code=2), "--dataset is needed")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(cli("iql", "--out", str(empty), "--resume", code=2), "no state.pt")


def test_a_snapshot_is_the_run_at_its_step_and_loads_as_a_run(
    halfcheetah_dataset: str, tmp_path: Path
) -> None:
    """The critic never sees the actor, so a snapshot's critic equals a run trained for
    that many steps; the actor's cosine spans the whole run, so its actor does not, unless
    the schedule is off (then the snapshot is that run, weight for weight)."""
    from trajplan.runs import load_critic, load_run

    def run(name: str, steps: int, cosine: bool = True, every: int | None = None) -> Path:
        cfg = IQLConfig(steps=steps, batch_size=32, hidden=[16], log_every=50, actor_cosine=cosine)
        saving = Saving(snapshot_every=every)
        return train_iql(halfcheetah_dataset, tmp_path / name, cfg, False, saving=saving)

    long, short = run("long", 200, every=100), run("short", 100)
    snap = long / "snapshots" / "step_100"
    w_snap, w_short = weights(snap), weights(short)
    critic = [k for k in w_snap if k.startswith("critic")]
    assert all(torch.equal(w_snap[k], w_short[k]) for k in critic)
    assert not torch.equal(w_snap["policy.actor.safetensors:layers.0.weight"],
                           w_short["policy.actor.safetensors:layers.0.weight"])  # fmt: skip
    assert_same_weights(long / "snapshots" / "step_200", long)
    flat, flat_short = run("flat", 200, False, every=100), run("flat_short", 100, False)
    assert_same_weights(flat / "snapshots" / "step_100", flat_short)
    assert stats(flat / "snapshots" / "step_100") == stats(flat_short)

    doc = json.loads((snap / "config.json").read_text())
    assert (doc["status"], doc["step"], doc["config"]["steps"]) == ("snapshot", 100, 200)
    assert "not a run of this budget" in doc["note"]
    assert load_run(snap).kind == "iql" and load_critic(snap, "halfcheetah").obs_dim == 17
    ev = tmp_path / "ev"
    cli("eval", str(snap), "--episodes", "1", "--episode-steps", "3", "--out", str(ev),
        "--no-progress")  # fmt: skip
    assert len(list(ev.rglob("eval.json"))) == 1
