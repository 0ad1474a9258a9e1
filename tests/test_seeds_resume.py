"""`train --seeds --resume` follows the single run's rule, per seed (issue 30, item 6): a
setting that changes the training (model, data, optimizer) is refused for the whole command
before any seed starts; a loop setting (--max-steps, epochs, ...) reaches every seed alike,
those that go on and those that start. In this process, as --jobs child processes, and on
Ray (refused before Ray is asked)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import cli, one_line_error

from trajplan.runs.checkpoint import read_manifest

pytestmark = pytest.mark.usefixtures("one_thread")


def seeds(dataset: str, out: Path, which: str, *extra: str, code: int = 0):
    return cli("train", "--config", "tiny", "--dataset", dataset, "--seeds", which, "--out",
               str(out), "--no-progress", "--threads", "1", *extra, code=code)  # fmt: skip


@pytest.mark.parametrize("jobs", ["1", "2"], ids=["in-turn", "jobs"])
def test_seeds_resume_refuses_a_changed_model_and_applies_loop_fields(
    jobs: str, halfcheetah_dataset: str, tmp_path: Path
) -> None:
    """One seed of two has a run (3 steps). --resume with another model is one line, and
    no seed trains (the new seed's folder is never made); --resume with --max-steps 5
    takes both seeds to step 5 on the run's model."""
    out = tmp_path / "seeds"
    seeds(halfcheetah_dataset, out, "1", "--max-steps", "3")
    res = seeds(halfcheetah_dataset, out, "0-1", "--jobs", jobs, "--resume", "--max-steps", "5",
                "--set", "model.n_embd=64", code=2)  # fmt: skip
    one_line_error(res, "seed1", "model.n_embd")
    with socket.socket() as free:  # on Ray too, refused before Ray is asked (nothing listens)
        free.bind(("127.0.0.1", 0))
        ray = f"127.0.0.1:{free.getsockname()[1]}"
    res = seeds(halfcheetah_dataset, out, "0-1", "--ray", ray, "--resume", "--set",
                "model.n_embd=64", code=2)  # fmt: skip
    one_line_error(res, "seed1", "model.n_embd")
    assert not (out / "seed0").exists()
    assert read_manifest(out / "seed1")[1]["step"] == 3

    seeds(halfcheetah_dataset, out, "0-1", "--jobs", jobs, "--resume", "--max-steps", "5")
    for s in (0, 1):
        cfg, doc = read_manifest(out / f"seed{s}")
        assert (doc["status"], doc["step"]) == ("finished", 5), doc
        assert (cfg.model.n_embd, cfg.train.max_steps, cfg.train.seed) == (32, 5, s)


def test_every_seed_child_is_told_what_the_in_process_seeds_are(tmp_path: Path) -> None:
    """The command of a seed's child (`--jobs`, Ray): its own seed and folder, the seeds'
    config (or `--resume-with` it when its run goes on), and `--allow-data-change` exactly
    when the parent was given it (it was dropped for children before 2026-12-08)."""
    from trajplan.training.seeds import ChildArgs, _command

    config = tmp_path / "seeds-config.yaml"
    for allow in (False, True):
        cmd, env = _command(ChildArgs(tmp_path, config, False, "cpu", allow), 3, None)
        assert cmd[cmd.index("--seed") + 1] == "3" and cmd[cmd.index("--out") + 1] == str(
            tmp_path / "seed3"
        )
        assert cmd[cmd.index("--config") + 1] == str(config) and env == {}
        assert ("--allow-data-change" in cmd) is allow
    (tmp_path / "seed1").mkdir()
    (tmp_path / "seed1" / "state.pt").write_bytes(b"")  # a checkpoint: a run that goes on
    cmd, env = _command(ChildArgs(tmp_path, config, True, "cpu", True), 1, 0)
    assert cmd[cmd.index("--resume-with") + 1] == str(config) and "--config" not in cmd
    assert "--allow-data-change" in cmd and env == {"CUDA_VISIBLE_DEVICES": "0"}
