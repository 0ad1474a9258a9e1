"""Hub sharing up to the network boundary: the staged folder and model card, loadable runs,
and push/pull through the CLI with the two network calls replaced by local copies."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from conftest import cli

from trajplan.errors import TrajplanError
from trajplan.hub.share import build_folder, pull, push

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def evaluated_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run with a (short) evaluation in RUN/eval."""
    from trajplan.evaluation.evalfiles import save_eval
    from trajplan.evaluation.evaluate import run_episodes
    from trajplan.runs import load_run

    run = tmp_path_factory.mktemp("hub") / "tiny-hc"
    shutil.copytree(tiny_run, run)
    result = run_episodes(load_run(run, device="cpu"), n_episodes=2, seed=3,
                          episode_steps=4, progress=False)  # fmt: skip
    save_eval(result, run / "eval", run / "metrics.jsonl")
    return run


def test_staged_folder_is_a_run_with_a_model_card(evaluated_run: Path, tmp_path: Path) -> None:
    from trajplan.configs import load_config
    from trajplan.runs.checkpoint import load_checkpoint, read_manifest

    folder = build_folder(evaluated_run, tmp_path / "up", "you/tiny-hc")
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "best.safetensors", "discretizer.safetensors",
            "metrics.jsonl", "eval/eval.json", "eval/eval.png", "README.md",
            "train-config.yaml"} == names  # fmt: skip
    ckpt = load_checkpoint(folder, device="cpu")  # the folder is a normal run directory
    assert ckpt.dataset_id == "test/halfcheetah/random-v0" and ckpt.ref_source
    cfg, _ = read_manifest(evaluated_run)
    assert load_config(folder / "train-config.yaml") == cfg  # retrains the same config
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: trajplan\n")
    for text in (
        "# Trajectory Transformer for HalfCheetah-v5, trained on `test/halfcheetah/random-v0`",
        "dataset metadata (-300.00 .. 12000.00)",  # the reference scores and their source
        "episodes capped at 4 steps: not comparable",
        "trajplan hub pull you/tiny-hc --out runs/tiny-hc",
        "trajplan train --config train-config.yaml",
        "n_layer: 1",
        "4 episodes, 240 steps): test fixture: random actions in HalfCheetah-v5",
    ):
        assert text in card, text
    score = load_eval_score(evaluated_run)
    assert f"| 2 | {score} " in card
    with pytest.raises(TrajplanError, match="already exists and is not empty"):
        build_folder(evaluated_run, folder)
    with pytest.raises(TrajplanError, match="not a trajplan run directory"):
        build_folder(tmp_path, tmp_path / "up2")


def load_eval_score(run: Path) -> str:
    import json

    s = json.loads((run / "eval" / "eval.json").read_text())["summary"]
    return f"{s['score_mean']:.1f} ± {s['score_stderr']:.1f}"


def test_bc_run_card(halfcheetah_dataset: str, tmp_path: Path) -> None:
    from trajplan.baselines.bc import BCConfig, train_bc
    from trajplan.runs.policy import load_bc

    run = train_bc(halfcheetah_dataset, tmp_path / "bc", BCConfig(hidden=[16], steps=20,
                   log_every=10), progress=False)  # fmt: skip
    folder = build_folder(run, tmp_path / "up")
    assert load_bc(folder).dataset_id == halfcheetah_dataset
    card = (folder / "README.md").read_text()
    assert "Behaviour-cloning baseline for HalfCheetah-v5" in card
    assert f"trajplan bc --dataset {halfcheetah_dataset} --out runs/bc-again --steps 20" in card
    assert "No evaluation was shared" in card and "USER/REPO" in card
    elsewhere = tmp_path / "ev" / "eval.json"  # e.g. trajplan eval RUN --out ev
    elsewhere.parent.mkdir()
    elsewhere.write_text(
        '{"gym_id": "HalfCheetah-v5", "summary": {"episodes": 3, "score_mean": 1.5, '
        '"score_stderr": 0.5, "reference": "D4RL constants (-280.18 .. 12135.00)"}}'
    )
    card = build_folder(run, tmp_path / "up2", evaluation=elsewhere.parent) / "README.md"
    assert "| 3 | 1.5 ± 0.5 |" in card.read_text() and "D4RL constants" in card.read_text()


def test_push_and_pull_through_the_cli(
    evaluated_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trajplan.hub.share as hub

    remote = tmp_path / "remote"  # stands in for the Hub repository

    def upload(folder: Path, repo_id: str, private: bool, token: str | None) -> str:
        shutil.copytree(folder, remote / repo_id)
        return f"https://hub.example/{repo_id}"

    def download(repo_id: str, out: Path, revision: str | None, token: str | None) -> None:
        shutil.copytree(remote / repo_id, out, dirs_exist_ok=True)

    monkeypatch.setattr(hub, "_upload", upload)
    monkeypatch.setattr(hub, "_download", download)
    pushed = cli("hub", "push", str(evaluated_run), "you/tiny-hc")
    assert "https://hub.example/you/tiny-hc" in pushed.stdout
    pulled = tmp_path / "runs" / "tiny-hc"
    cli("hub", "pull", "you/tiny-hc", "--out", str(pulled))
    assert (pulled / "README.md").is_file()
    args = ("--episode-steps", "3", "--threads", "1", "--out", str(tmp_path / "ev"))
    cli("eval", "--checkpoint", str(pulled), "--episodes", "1", *args)
    assert len(list((tmp_path / "ev").glob("tiny-hc-*/eval.json"))) == 1
    cli("plan", "--checkpoint", str(pulled), "--max-steps", "2", "--threads", "1",
        "--out", str(tmp_path / "plan.json"))  # fmt: skip
    cli("hub", "push", str(evaluated_run), "you/x", "--stage", str(tmp_path / "s"))
    assert (tmp_path / "s" / "README.md").is_file() and not (remote / "you" / "x").exists()
    (remote / "you" / "junk").mkdir(parents=True)
    (remote / "you" / "junk" / "notes.txt").write_text("hello")
    junk = cli("hub", "pull", "you/junk", "--out", str(tmp_path / "junk"), code=2)
    assert "you/junk is not a trajplan run" in junk.stderr
    with pytest.raises(TrajplanError, match="not empty: choose another --out"):
        pull("you/tiny-hc", pulled)


def test_iql_run_push_and_pull(
    halfcheetah_dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An IQL run travels with its critic (not its snapshots): the pulled run evaluates
    and scores as TT + Q's critic, the same critic as the original."""
    import torch

    import trajplan.hub.share as hub
    from trajplan.baselines.iql import IQLConfig, Saving, train_iql
    from trajplan.runs import load_critic

    cfg = IQLConfig(steps=30, batch_size=32, hidden=[16], log_every=10)
    run = train_iql(
        halfcheetah_dataset, tmp_path / "iql", cfg, False, saving=Saving(snapshot_every=15)
    )
    remote = tmp_path / "remote"
    monkeypatch.setattr(hub, "_upload", lambda folder, repo_id, *_: str(
        shutil.copytree(folder, remote / repo_id)))  # fmt: skip
    monkeypatch.setattr(hub, "_download", lambda repo_id, out, *_: shutil.copytree(
        remote / repo_id, out, dirs_exist_ok=True))  # fmt: skip
    cli("hub", "push", str(run), "you/hc-iql")
    names = {
        p.relative_to(remote / "you/hc-iql").as_posix() for p in (remote / "you/hc-iql").rglob("*")
    }
    assert names == {"config.json", "policy.actor.safetensors", "critic.safetensors",
                     "metrics.jsonl", "README.md"}  # fmt: skip
    card = (remote / "you/hc-iql" / "README.md").read_text()
    again = (f"trajplan iql --dataset {halfcheetah_dataset} --out runs/iql-again --steps 30 "
             "--hidden 16 --batch-size 32 --expectile 0.7 --temperature 3.0 --seed 0")  # fmt: skip
    for text in ("# Implicit Q-Learning (IQL) baseline and critic for HalfCheetah-v5",
                 "implicit-q-learning", "30 of 30 steps (finished)",
                 "trajplan eval TT_RUN --critic runs/iql", again):  # fmt: skip
        assert text in card, text
    pulled = tmp_path / "runs" / "hc-iql"
    cli("hub", "pull", "you/hc-iql", "--out", str(pulled))
    cli("eval", str(pulled), "--episodes", "1", "--episode-steps", "3", "--threads", "1",
        "--out", str(tmp_path / "ev"), "--no-progress")  # fmt: skip
    assert len(list((tmp_path / "ev").rglob("eval.json"))) == 1
    mine, theirs = load_critic(run, "halfcheetah"), load_critic(pulled, "halfcheetah")
    obs, act = torch.randn(5, 17), torch.rand(5, 6) * 2 - 1
    assert torch.equal(mine.q(obs, act), theirs.q(obs, act))


def test_missing_hub_extra_is_a_clear_error(
    evaluated_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(TrajplanError, match=r"pip install 'trajplan\[hub\]'"):
        push(evaluated_run, "you/tiny-hc")


def test_corrupt_weights_never_pushed(tiny_run, halfcheetah_dataset, minari_root, tmp_path):
    """Truncated TT weights (a traceback), NaN in a BC actor and inf in an IQL critic
    (uploaded as they were): `hub push` loads the staged copy first and stops with one line
    naming the run's file; a real child with the Hub offline, so nothing could leave
    anyway; --stage leaves no folder."""
    import os
    import subprocess

    from conftest import one_line_error
    from safetensors import safe_open
    from safetensors.numpy import save_file

    def poison(path: Path, value: float) -> None:
        with safe_open(str(path), framework="numpy") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        tensors[next(k for k in sorted(tensors) if tensors[k].ndim == 2)].flat[0] = value
        save_file(tensors, str(path), metadata=meta)

    tt = tmp_path / "tt"
    shutil.copytree(tiny_run, tt)
    weights = (tt / "model.safetensors").read_bytes()
    (tt / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    data = ("--dataset", halfcheetah_dataset, "--steps", "5", "--no-progress")
    cli("bc", *data, "--out", tmp_path / "bc", "--hidden", "8")
    cli("iql", *data, "--out", tmp_path / "iql", "--hidden", "8,8")
    poison(tmp_path / "bc" / "policy.actor.safetensors", float("nan"))
    poison(tmp_path / "iql" / "critic.safetensors", float("inf"))
    env = dict(os.environ, MINARI_DATASETS_PATH=str(minari_root), HF_HUB_OFFLINE="1",
               HF_TOKEN="hf_not_a_token", COLUMNS="200")  # fmt: skip
    for run, file, words in (
        ("tt", "model.safetensors", "corrupt or truncated"),
        ("bc", "policy.actor.safetensors", "NaN or inf"),
        ("iql", "critic.safetensors", "NaN or inf"),
    ):
        cmd = [sys.executable, "-m", "trajplan", "hub", "push", str(tmp_path / run), "you/x"]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        one_line_error(res, "not pushed", str(tmp_path / run / file), words)
        res = cli("hub", "push", tmp_path / run, "you/x", "--stage", tmp_path / "stage", code=2)
        one_line_error(res, "not pushed", file)
        assert not (tmp_path / "stage").exists()
