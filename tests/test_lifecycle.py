"""The run directory's lifecycle (trajplan.runs.lifecycle), one set of rules for TT, IQL, BC and
the ensemble: a dead end is reopened by a new run, an existing run is refused in the same
words by TT and IQL, a resume state that is absent, damaged or foreign is one line, BC and
the ensemble lock their directory, and a save is due by steps or by the clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from trajplan.baselines.bc import BCConfig, train_bc
from trajplan.baselines.iql import IQLConfig, train_iql
from trajplan.baselines.iql_state import load_state
from trajplan.baselines.iql_state import open_run_dir as open_iql_dir
from trajplan.errors import TrajplanError
from trajplan.prediction.ensemble import train_ensemble
from trajplan.runs.checkpoint import STARTUP_FILES, is_dead_end, load_train_state
from trajplan.runs.ensemble import EnsembleConfig
from trajplan.runs.lifecycle import SaveClock, open_run_dir
from trajplan.training.prepare import open_run_dir as open_tt_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def folder(path: Path, *names: str) -> Path:
    """A directory holding these files (a trailing / makes a folder)."""
    path.mkdir(parents=True)
    for name in names:
        if name.endswith("/"):
            (path / name).mkdir(parents=True)
        else:
            (path / name).write_text("x")
    return path


def tiny_iql(steps: int = 3) -> IQLConfig:
    return IQLConfig(steps=steps, batch_size=16, hidden=[8], log_every=2)


def test_the_dead_end_rule(tmp_path: Path) -> None:
    """Lock, temporary files and the kind's start-up files only: nothing to lose."""
    assert is_dead_end(folder(tmp_path / "empty"))
    assert not is_dead_end(tmp_path / "missing")
    started = folder(tmp_path / "tt", ".lock", ".model.safetensors.x1.tmp", "config.json",
                     "metrics.jsonl")  # fmt: skip
    assert is_dead_end(started)  # TT wrote config.json as it started, no checkpoint yet
    (started / "state.pt").write_text("x")
    assert not is_dead_end(started)
    assert "config.json" in STARTUP_FILES


def test_a_dead_end_is_reopened_by_every_kind(halfcheetah_dataset: str, tmp_path: Path) -> None:
    """What a process killed while starting leaves: a new run starts in it, the orphaned
    temporary files (and IQL's old snapshots) gone."""
    orphan = ".critic.safetensors.abc123.tmp"
    iql = folder(tmp_path / "iql", ".lock", orphan, "snapshots/step_2/")
    train_iql(halfcheetah_dataset, iql, tiny_iql(), progress=False)
    assert not (iql / orphan).exists() and not (iql / "snapshots").exists()
    assert (iql / "config.json").is_file()
    bc = folder(tmp_path / "bc", ".lock", orphan)
    train_bc(halfcheetah_dataset, bc, BCConfig(hidden=[8], steps=3), progress=False)
    assert not (bc / orphan).exists() and (bc / "config.json").is_file()
    tt = folder(tmp_path / "tt", ".lock", orphan, "config.json", "metrics.jsonl")
    lock = open_tt_dir(tt, resume=False, main=True)
    assert lock is not None and not (tt / orphan).exists()
    lock.release()


def test_an_existing_run_is_refused_in_the_same_words(
    halfcheetah_dataset: str, tmp_path: Path
) -> None:
    """TT and IQL: an unfinished run (its state.pt) is refused for a new run, with the hint
    to resume it; BC and the ensemble, which do not resume, without it. Nothing touched."""
    run = folder(tmp_path / "run", "state.pt", "metrics.jsonl")
    expected = (
        f"run directory {run} already exists: choose another --out, or continue it with --resume"
    )
    for open_dir in (lambda: open_tt_dir(run, False, True), lambda: open_iql_dir(run, False)):
        with pytest.raises(TrajplanError) as err:
            open_dir()
        assert str(err.value) == expected
    no_resume = f"run directory {run} already exists: choose another --out"
    with pytest.raises(TrajplanError) as err:
        train_bc(halfcheetah_dataset, run, BCConfig(hidden=[8], steps=3), progress=False)
    assert str(err.value) == no_resume
    with pytest.raises(TrajplanError) as err:
        train_ensemble(halfcheetah_dataset, run, EnsembleConfig(steps=3), progress=False)
    assert str(err.value) == no_resume
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl", "state.pt"]
    finished = train_iql(halfcheetah_dataset, tmp_path / "iql", tiny_iql(), progress=False)
    with pytest.raises(TrajplanError, match="already exists: choose another --out$"):
        train_iql(halfcheetah_dataset, finished, tiny_iql(), progress=False)  # nothing to resume
    for open_dir in (lambda p: open_tt_dir(p, True, True), lambda p: open_iql_dir(p, True)):
        with pytest.raises(TrajplanError, match=r"^cannot resume \S+: no such run directory$"):
            open_dir(tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_a_resume_state_absent_damaged_or_foreign_is_one_line(tmp_path: Path) -> None:
    run = folder(tmp_path / "run")
    for load, kind in ((load_state, "IQL"), (load_train_state, "TT")):
        with pytest.raises(TrajplanError, match=r"^cannot resume \S+: no state.pt \(.+\)$"):
            load(run)
        (run / "state.pt").write_bytes(b"PK\x03\x04 half a zip")
        with pytest.raises(TrajplanError, match=f"corrupt or truncated {kind} resume state"):
            load(run)
        torch.save({"format": "trajplan-other/1"}, run / "state.pt")
        with pytest.raises(TrajplanError, match=f"not a trajplan {kind} resume state$"):
            load(run)
        (run / "state.pt").unlink()


def test_bc_and_the_ensemble_lock_their_directory(halfcheetah_dataset: str, tmp_path: Path):
    """A second process into a directory being written fails at once; a failed start
    leaves no directory behind."""
    out = tmp_path / "busy"
    lock = open_run_dir(out)
    try:
        with pytest.raises(TrajplanError, match="in use by another process"):
            train_bc(halfcheetah_dataset, out, BCConfig(hidden=[8], steps=3), progress=False)
        with pytest.raises(TrajplanError, match="in use by another process"):
            train_ensemble(halfcheetah_dataset, out, EnsembleConfig(steps=3), progress=False)
    finally:
        lock.release(remove_if_unused=True)
    assert not out.exists()
    with pytest.raises(TrajplanError, match="not found"):
        train_bc("test/none/missing-v0", tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


def test_a_save_is_due_by_steps_or_by_the_clock() -> None:
    steps = SaveClock(every=3, every_min=None)
    assert [n for n in range(1, 10) if steps.due(n)] == [3, 6, 9] and not steps.by_clock()
    clock = SaveClock(every=1000, every_min=0.001)  # 60 ms
    assert not clock.due(1)
    time.sleep(0.1)
    assert clock.by_clock() and clock.due(1)
    clock.saved()
    assert not clock.due(1)
