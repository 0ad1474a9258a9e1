"""The README's offline workflow, command by command, at toy size: collect -> train two
seeds (TensorBoard and offline W&B loggers, evaluation during training) -> bc -> eval both
(last and best-eval weights) -> plot curves and scores -> aggregate over seeds.

The commands are the README's with size options added (fewer steps, small planning) so that
the whole sequence runs in seconds; the video and hub steps are tested in test_video.py and
test_hub.py, `data from-replay` in test_collect.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cli

CONFIG = "cpu-recipe"  # a shipped config, by name
DATASET = "test/halfcheetah/workflow-v0"


@pytest.mark.usefixtures("one_thread")
def test_readme_workflow(minari_root: Path, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    runs = tmp_path / "runs"
    cli("data", "collect", "--env", "halfcheetah", "--policy", "medium", "--steps", "320",
        "--max-episode-steps", "80", "--dataset-id", DATASET)  # fmt: skip
    small = ("--epochs", "1", "--batch-size", "16", "--set", "train.log_every=2",
             "--no-progress", "--threads", "1")  # fmt: skip
    during = ("--set", "train.eval_every=4", "--set", "train.eval_episodes=1",
              "--set", "train.eval_episode_steps=3")  # fmt: skip
    cli("train", "--config", CONFIG, "--dataset", DATASET, "--seeds", "0,1",
        "--out", str(runs / "tt"), "--logger", "tensorboard,wandb", *during, *small)  # fmt: skip
    cli("bc", "--dataset", DATASET, "--out", str(runs / "bc-s0"), "--seed", "0",
        "--steps", "40", "--hidden", "32,32", "--no-progress")  # fmt: skip
    tt = [runs / "tt" / "seed0", runs / "tt" / "seed1"]
    cli("eval", *map(str, tt), str(runs / "bc-s0"), "--episodes", "2",
        "--episode-steps", "6", "--horizon", "2", "--beam-width", "4")  # fmt: skip
    evals = sorted(runs.glob("**/eval/*/eval.json"))  # one new folder per evaluation
    assert [p.parents[2].name for p in evals] == ["bc-s0", "seed0", "seed1"]
    best = tmp_path / "best"
    cli("eval", str(tt[0]), "--weights", "best-eval", "--episodes", "1", "--episode-steps", "2",
        "--horizon", "2", "--beam-width", "4", "--out", str(best))  # fmt: skip
    best_eval = json.loads(next(best.glob("*/eval.json")).read_text())
    assert best_eval["checkpoint"].endswith("seed0") and best_eval["weights"] == "best-eval"
    curves, scores = tmp_path / "curves.png", tmp_path / "scores.svg"
    cli("plot", *map(str, tt), str(runs / "bc-s0"), "--out", str(curves))
    cli("plot", "--scores", *map(str, evals), "--out", str(scores))
    agg = tmp_path / "aggregate.json"
    out = cli("aggregate", *map(str, evals), "--json", str(agg)).stdout

    for run in tt:  # two seeds, each a whole run with its loggers and evaluations
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert {"train", "val", "eval"} <= {r["kind"] for r in records}  # recipe holds out 5%
        # train.eval_every=4: an evaluation at every 4th step and at the last one
        last = json.loads((run / "config.json").read_text())["step"]
        evals_during = [r for r in records if r["kind"] == "eval"]
        assert last >= 4 and [r["step"] for r in evals_during] == sorted(
            {*range(4, last + 1, 4), last}
        )
        assert all(r["capped"] and r["episodes"] == 1 for r in evals_during)
        assert (run / "best_eval.safetensors").exists() and any((run / "tensorboard").iterdir())
        assert list((run / "wandb").glob("offline-run-*"))
    seeds = [json.loads((r / "config.json").read_text())["config"]["train"]["seed"] for r in tt]
    assert seeds == [0, 1]
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "dataset metadata" in scores.read_text()  # collect stores the D4RL constants
    doc = json.loads(agg.read_text())
    bc, tt = doc["groups"]  # in order of first appearance
    assert tt["label"] == f"TT h2 {DATASET}" and tt["n_runs"] == 2 and tt["n_episodes"] == 4
    assert bc["label"] == f"BC {DATASET}" and bc["n_runs"] == 1
    assert tt["iqm_ci"][0] <= tt["iqm"] <= tt["iqm_ci"][1]
    assert "IQM" in out and "seed1" in out and "bc-s0" in out


@pytest.mark.slow
def test_gpu_check_runs_its_steps_on_cpu_and_refuses_missing_cuda(tmp_path: Path) -> None:
    """scripts/gpu_check.sh runs the same CLI steps a GPU run times (data, train, eval) at
    toy size on the CPU and ends with one JSON line; asking for CUDA without it is one line."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
    env = {**os.environ, "PYTHON": sys.executable}
    args = ["bash", str(script), "--device", "cpu", "--small", "--skip", "plan,ddp"]
    proc = subprocess.run([*args, "--out", str(tmp_path)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    figs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not [k for k in figs if k.endswith("_error")]
    assert figs["train_amp_tokens_per_s"] > 0 and figs["eval_episodes"] == 2
    assert figs["eval_ms_per_step"] > 0 and (tmp_path / "run-amp" / "model.safetensors").exists()
    if not torch.cuda.is_available():
        proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
        assert proc.returncode == 2 and len(proc.stdout.strip().splitlines()) == 1
        assert "no CUDA device" in proc.stdout
