"""The run-directory checkpoint: round trip, damage of every kind, newest finished run."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from trajplan.data.tokens import Discretizer
from trajplan.errors import TrajplanError
from trajplan.runs.checkpoint import (
    find_latest_run,
    load_checkpoint,
    read_manifest,
    rng_state,
    set_rng_state,
)


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A writable copy of the session's tiny run."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_round_trip(tiny_run: Path, minari_datasets) -> None:
    from safetensors.torch import load_file

    from trajplan.configs import load_config
    from trajplan.data.transitions import prepare

    ckpt = load_checkpoint(tiny_run, device="cpu")
    assert ckpt.run_dir == tiny_run and ckpt.which == "last" and ckpt.step == 40
    assert (ckpt.env, ckpt.dataset_id) == ("halfcheetah", minari_datasets.halfcheetah)
    assert (ckpt.ref_min, ckpt.ref_max, ckpt.ref_source) == (-300.0, 12000.0, "dataset metadata")
    assert not ckpt.model.training and ckpt.model.pos_emb.device.type == "cpu"
    saved = load_file(str(tiny_run / "model.safetensors"))
    for name, tensor in ckpt.model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    tiny = load_config("tiny")
    assert ckpt.config.plan == tiny.plan and ckpt.config.data == tiny.data
    # the bins are the ones training used: refit on the same data gives the same edges
    assert ckpt.discretizer == prepare(ckpt.dataset_id, ckpt.config.data).discretizer
    # a model that plans: same input, same logits
    idx = torch.randint(0, 20, (2, 30))
    with torch.no_grad():
        assert torch.equal(ckpt.model(idx)[0], load_checkpoint(tiny_run).model.cpu()(idx)[0])


def test_best_and_file_paths(tiny_run: Path) -> None:
    from safetensors.torch import load_file

    best = load_checkpoint(tiny_run, which="best")
    assert best.which == "best"
    saved = load_file(str(tiny_run / "best.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in best.model.state_dict().items())
    direct = load_checkpoint(tiny_run / "best.safetensors")
    assert direct.which == "best" and direct.run_dir == tiny_run
    _, doc = read_manifest(tiny_run)
    assert doc["best_epoch"] >= 0 and doc["best_loss"] <= doc["last_loss"] + 1.0
    with pytest.raises(TrajplanError, match="one of last, best, best-eval"):
        load_checkpoint(tiny_run, which="first")


def test_no_temporary_files_left(tiny_run: Path) -> None:
    assert not [p for p in tiny_run.iterdir() if p.name.endswith(".tmp") or "tmp" in p.name]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate_weights", "corrupt or truncated"),
        ("garbage_weights", "corrupt or truncated"),
        ("missing_weights", "missing weights"),
        ("missing_discretizer", "discretizer"),
        ("corrupt_config", "corrupt run config"),
        ("missing_config", "not a trajplan run directory"),
        ("config_disagrees", "do not match"),
        ("config_without_dims", "dimensions are missing"),
        ("unknown_config_key", "unknown key"),
        ("other_discretizer", "does not match the model"),
    ],
)
def test_damaged_checkpoint_is_one_clear_error(run_copy: Path, damage: str, message: str):
    weights = run_copy / "model.safetensors"
    cfg_path = run_copy / "config.json"
    doc = json.loads(cfg_path.read_text())
    if damage == "truncate_weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "garbage_weights":
        weights.write_bytes(b"\x00" * 64)
    elif damage == "missing_weights":
        weights.unlink()
    elif damage == "missing_discretizer":
        (run_copy / "discretizer.safetensors").unlink()
    elif damage == "corrupt_config":
        cfg_path.write_text(cfg_path.read_text()[:100])
    elif damage == "missing_config":
        cfg_path.unlink()
    elif damage == "config_disagrees":
        doc["config"]["model"]["n_embd"] = 64
        cfg_path.write_text(json.dumps(doc))
    elif damage == "config_without_dims":
        doc["config"]["model"]["obs_dim"] = 0
        cfg_path.write_text(json.dumps(doc))
    elif damage == "unknown_config_key":
        doc["config"]["train"]["warp_speed"] = 9
        cfg_path.write_text(json.dumps(doc))
    elif damage == "other_discretizer":
        Discretizer.fit(np.random.default_rng(0).normal(size=(500, 7)), 20).save(
            run_copy / "discretizer.safetensors"
        )
    with pytest.raises(TrajplanError, match=message) as exc:
        load_checkpoint(run_copy, device="cpu")
    assert "\n" not in str(exc.value)


def test_find_latest_run(tiny_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    with pytest.raises(TrajplanError, match="no runs directory"):
        find_latest_run("halfcheetah", root)

    def make(name: str, finished: str, status: str = "finished", env: str = "halfcheetah"):
        run = Path(shutil.copytree(tiny_run, root / name))
        doc = json.loads((run / "config.json").read_text())
        doc.update(finished=finished, status=status, env=env)
        (run / "config.json").write_text(json.dumps(doc))

    make("old", "2026-01-01T00:00:00+00:00")
    make("new", "2026-03-01T00:00:00+00:00")
    make("newer-but-interrupted", "2026-04-01T00:00:00+00:00", status="interrupted")
    make("hopper", "2026-05-01T00:00:00+00:00", env="hopper")
    (root / "junk").mkdir()
    (root / "junk" / "config.json").write_text("{not json")
    assert find_latest_run("halfcheetah", root).name == "new"
    assert find_latest_run("HalfCheetah-v5", root).name == "new"
    assert find_latest_run("hopper", root).name == "hopper"
    with pytest.raises(TrajplanError, match="no finished run for walker2d"):
        find_latest_run("walker2d", root)


def test_rng_state_round_trip() -> None:
    state = rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
