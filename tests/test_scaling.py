"""scripts/bench_scaling.py: TT's score against training budgets, each a finished schedule,
on the tiny config and the HalfCheetah fixture dataset."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location(
        "bench_scaling", ROOT / "scripts" / "bench_scaling.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def iql_runs(minari_datasets, tmp_path_factory) -> dict[str, Path]:
    """Tiny IQL runs on both fixture datasets (HalfCheetah's fits, Hopper's does not)."""
    from trajplan.baselines.iql import IQLConfig, train_iql

    cfg = IQLConfig(steps=20, batch_size=32, hidden=[16], log_every=20)
    root = tmp_path_factory.mktemp("iql")
    return {
        name: train_iql(dataset, root / name, cfg=cfg, progress=False)
        for name, dataset in (("cheetah", minari_datasets.halfcheetah),
                              ("hopper", minari_datasets.hopper))
    }  # fmt: skip


def run_main(bench, capsys, *argv: str) -> tuple[int, str, str]:
    code = bench.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files_and_mtimes(out: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(out.glob("e*/**/*")) if p.is_file()}


def test_bench_scaling_trains_finished_schedules_and_reuses_them(
    minari_root: Path, halfcheetah_dataset: str, iql_runs, tmp_path: Path, capsys, one_thread
) -> None:
    from trajplan.evaluation.plot import read_rows

    bench = load_script()
    out = tmp_path / "scaling"
    argv = ["--dataset", halfcheetah_dataset, "--config", "tiny", "--epochs", "1,0.5",
            "--episodes", "5", "--episode-steps", "3", "--seed", "0", "--workers", "1",
            "--threads", "1", "--device", "cpu", "--critic", str(iql_runs["cheetah"]),
            "--out", str(out)]  # fmt: skip
    code, stdout, err = run_main(bench, capsys, *argv)
    assert code == 0, err
    figures = json.loads(stdout.strip().splitlines()[-1])
    per_epoch = figures["steps_per_epoch"]
    assert per_epoch == math.ceil(figures["n_windows"] / 64)  # the tiny config's batch
    assert figures["epochs"] == [0.5, 1.0] and figures["training_seeds"] == [42]
    for budget in (0.5, 1.0):
        key = f"{budget:g}"
        run = out / f"e{key}" / "seed42"  # the tiny config's own train.seed
        assert figures["runs_by_epochs"][key] == [str(run)]
        doc = json.loads((run / "config.json").read_text())
        steps = round(budget * per_epoch)
        assert doc["status"] == "finished" and doc["step"] == doc["total_steps"] == steps
        train_cfg = doc["config"]["train"]
        assert train_cfg["max_steps"] == steps and train_cfg["epochs"] == math.ceil(budget)
        assert train_cfg["fit_schedule"] and train_cfg["time_limit_s"] is None
        lines = [r for r in read_rows(run / "metrics.jsonl") if r["kind"] == "train"]
        assert lines[-1]["step"] == steps
        # the schedule ended with the run: its last rate is the cosine's floor, 0.1x
        assert lines[-1]["lr"] == pytest.approx(0.1 * train_cfg["lr"], rel=1e-6)
        assert figures["steps_by_epochs"][key] == steps
        assert figures["tokens_by_epochs"][key] == doc["tokens"]
        assert figures["train_minutes_by_epochs"][key] == round(doc["wall_s"] / 60, 2)
        assert figures["trained_by_epochs"][key] == ["trained"]
        # TT alone and TT + Q over its own candidates, on the same episodes
        evals = [json.loads(p.read_text()) for p in sorted((run / "eval").glob("*/eval.json"))]
        assert len(evals) == 2
        for ev in evals:
            assert [e["seed"] for e in ev["episodes"]] == [0, 1, 2, 3, 4]
            assert ev["episode_steps"] == 3 and not ev["plan"].get("prior")
        own, alone = sorted(evals, key=lambda ev: not ev["plan"].get("critic"))
        assert own["plan"]["critic"] == str(iql_runs["cheetah"].resolve())
        assert alone["plan"].get("critic") is None
        for row, ev in (("tt", alone), ("ttq_own", own)):
            s = ev["summary"]
            assert figures[f"{row}_normalized_by_epochs"][key] == pytest.approx(
                s["score_mean"], abs=0.006
            )
            assert figures[f"{row}_stderr_by_epochs"][key] == pytest.approx(
                s["score_stderr"], abs=0.006
            )
    assert figures["tokens_by_epochs"]["1"] == figures["tokens_per_epoch"]  # one full pass
    assert figures["paper_epochs"] == int(1e6 / figures["n_windows"] * 50)
    assert figures["paper_tokens"] == figures["paper_epochs"] * figures["tokens_per_epoch"]
    assert not [k for k in figures if "_iqm" in k or "_success" in k]  # one seed, no goal
    assert "TT + Q own" in stdout and "paper's budget" in stdout
    # the CSV holds the JSON's per-budget figures
    with (out / "scaling.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["epochs"] for r in table] == ["0.5", "1"]
    for r in table:
        for col, value in r.items():
            want = None if col == "epochs" else figures[f"{col}_by_epochs"][r["epochs"]]
            assert col == "epochs" or float(value) == pytest.approx(want), col
    assert set(table[0]) - {"epochs"} == {
        k.removesuffix("_by_epochs") for k in figures
        if k.endswith("_by_epochs") and k not in ("runs_by_epochs", "trained_by_epochs")
    }  # fmt: skip
    assert (out / "scaling.png").stat().st_size > 1000
    assert figures["csv"] == str(out / "scaling.csv")

    # again: every run and evaluation is reused, nothing trained or written in the runs
    before = files_and_mtimes(out)
    code, again_out, err = run_main(bench, capsys, *argv)
    assert code == 0, err
    again = json.loads(again_out.strip().splitlines()[-1])
    assert files_and_mtimes(out) == before
    for key in ("0.5", "1"):
        assert again["trained_by_epochs"][key][0].startswith("reused (finished")
    for k in ("tt_normalized_by_epochs", "ttq_own_normalized_by_epochs", "tokens_by_epochs"):
        assert again[k] == figures[k]


def test_bench_scaling_refuses_bad_input_in_one_line(
    minari_root: Path, halfcheetah_dataset: str, iql_runs, tmp_path: Path, capsys
) -> None:
    bench = load_script()
    out = tmp_path / "bad"
    base = ["--dataset", halfcheetah_dataset, "--config", "tiny", "--out", str(out)]
    for extra, words in (
        (["--epochs", "0,-1"], "--epochs takes positive numbers"),
        (["--epochs", "a"], "--epochs takes positive numbers"),
        (["--epochs", "1e-6"], "give at least"),  # under one step of the tiny dataset
        (["--critic", str(tmp_path)], "is not an IQL run"),
        (["--critic", str(iql_runs["hopper"])], "trained on"),  # a Hopper critic
        (["--device", "tpu"], "unknown device"),
    ):
        code, stdout, err = run_main(bench, capsys, *base, *extra)
        assert code == 2, (extra, stdout, err)
        assert err.count("\n") == 1 and words in err, err
        assert "Traceback" not in err and not stdout
    code, _, err = run_main(bench, capsys, *base[2:], "--dataset", "local/nope/x-v0")
    assert code == 2 and err.count("\n") == 1 and "not found" in err
    assert not out.exists()  # nothing made before the input was checked
