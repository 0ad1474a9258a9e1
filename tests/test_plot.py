"""Figures (trajplan.evaluation.plot) and seed aggregation (trajplan.evaluation.aggregate):
readers, statistics, files, tables at 80 columns, CLI. Metrics and eval.json files are
written like train/bc/eval write them; the real pipeline runs in test_workflow.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from rich.console import Console

from trajplan.envs.references import references_for
from trajplan.envs.rollout import EpisodeResult
from trajplan.errors import TrajplanError
from trajplan.evaluation.aggregate import (
    aggregate,
    aggregate_evals,
    bootstrap_ci,
    iqm,
    tables,
    to_json,
)
from trajplan.evaluation.evaluate import EvalResult
from trajplan.evaluation.plot import loss_curves, plot_curves, read_series, run_labels
from trajplan.evaluation.selection import plot_eval_scores

PNG, SVG = b"\x89PNG\r\n\x1a\n", b"<svg"


def write_tt_metrics(run: Path, steps: int = 20) -> Path:
    """A TT run's metrics.jsonl: train lines (with token counts), epoch and val lines."""
    run.mkdir(parents=True, exist_ok=True)
    lines = []
    for s in range(1, steps + 1):
        kinds = {f"loss_{k}": 3.0 / s + i for i, k in enumerate(("obs", "act", "rew", "val"))}
        lines.append({"kind": "train", "step": s, "loss": 4.0 / s, "tokens": 100 * s, **kinds})
        if s % 10 == 0:
            lines.append({"kind": "epoch", "step": s, "epoch": s // 10, "loss": 4.0 / s})
            val = {f"val_{k}": 3.5 / s for k in ("obs", "act", "rew", "val")}
            lines.append({"kind": "val", "step": s, "epoch": s // 10, "val_loss": 5.0 / s, **val})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{oops\n")
    return run


def write_bc_metrics(run: Path) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    lines = [{"kind": "bc", "step": s, "loss": 1 / s, "val_loss": 1.2 / s} for s in (5, 10, 15)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return run


def write_eval(
    path: Path, scores: list[float], dataset: str = "local/halfcheetah/medium-v0",
    policy: str = "tt", steps: int | None = None, run: str | None = None,
) -> Path:  # fmt: skip
    """An eval.json as `trajplan eval` writes it, with these normalized episode scores."""
    refs = references_for("halfcheetah")
    span = refs.ref_max - refs.ref_min
    episodes = [
        EpisodeResult(i, refs.ref_min + s / 100 * span, 1000, None, False)
        for i, s in enumerate(scores)
    ]
    for e in episodes:
        e.score = refs.score(e.ret)
    plan = {"policy": "bc"} if policy == "bc" else {"horizon": 5}
    result = EvalResult("halfcheetah", "HalfCheetah-v5", episodes, refs, plan, 1.0, 1000,
                        steps, run or str(path.parent.parent), dataset)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict()))
    return path


# -- learning curves -------------------------------------------------------------------------


def test_read_series_by_step_and_tokens(tmp_path: Path) -> None:
    run = write_tt_metrics(tmp_path / "tt")
    s = read_series(run / "metrics.jsonl")
    xs, ys = s[("train", "loss")]
    assert list(xs) == list(range(1, 21)) and ys[1] == pytest.approx(2.0)
    assert list(s[("val", "val_loss")][0]) == [10, 20] and ("val", "val_obs") in s
    tok = read_series(run / "metrics.jsonl", "tokens")
    assert list(tok[("train", "loss")][0]) == [100 * i for i in range(1, 21)]
    assert list(tok[("val", "val_loss")][0]) == [1000, 2000]  # interpolated from the steps
    curves = loss_curves(run / "metrics.jsonl")  # what eval.png draws
    assert {"train loss", "epoch loss", "val val_loss", "train loss_obs"} <= curves.keys()
    bc = write_bc_metrics(tmp_path / "bc")
    with pytest.raises(TrajplanError, match="no token counts .* use --x step"):
        read_series(bc / "metrics.jsonl", "tokens")
    with pytest.raises(TrajplanError, match="x axis must be one of step, tokens"):
        read_series(bc / "metrics.jsonl", "time")


def test_plot_curves_png_svg_and_bad_input(tmp_path: Path) -> None:
    runs = [write_tt_metrics(tmp_path / "a" / "seed0"), write_tt_metrics(tmp_path / "b" / "seed0")]
    runs.append(write_bc_metrics(tmp_path / "bc"))
    assert run_labels(runs) == ["a/seed0", "b/seed0", "bc"]
    assert plot_curves(runs, tmp_path / "c.png").read_bytes()[:8] == PNG
    svg = plot_curves(runs[:2], tmp_path / "c.svg", x="tokens").read_text()
    assert SVG in svg.encode() and "tokens seen" in svg and "validation" in svg
    assert "observation tokens" in svg and "BC loss" not in svg
    with pytest.raises(TrajplanError, match=r"must end in \.png or \.svg"):
        plot_curves(runs, tmp_path / "c.jpg")
    with pytest.raises(TrajplanError, match="no metrics file"):
        plot_curves([tmp_path / "missing"], tmp_path / "c.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text('{"kind": "start"}\n')
    with pytest.raises(TrajplanError, match="no loss or score lines yet"):
        plot_curves([tmp_path / "empty"], tmp_path / "c.png")


def test_plot_curves_of_a_real_run(tiny_run: Path, tmp_path: Path) -> None:
    out = plot_curves([tiny_run], tmp_path / "tiny.svg", x="tokens")
    assert "TT loss" in out.read_text()


# -- scores ----------------------------------------------------------------------------------


def test_plot_scores_names_the_reference(tmp_path: Path) -> None:
    a = write_eval(tmp_path / "tt" / "eval" / "eval.json", [10, 20, 30])
    b = write_eval(tmp_path / "bc" / "eval" / "eval.json", [40, 41], policy="bc", steps=100)
    svg = plot_eval_scores([a, tmp_path / "bc"], tmp_path / "s.svg")[0].read_text()  # a run dir
    assert "D4RL constants" in svg and "normalized score" in svg and "capped at 100" in svg
    assert "20.0 ± 5.8" in svg and "40.5 ± 0.5" in svg
    assert plot_eval_scores([b], tmp_path / "s.png")[0].read_bytes()[:8] == PNG
    with pytest.raises(TrajplanError, match="no eval.json at"):
        plot_eval_scores([tmp_path / "nothing"], tmp_path / "s.png")


# -- aggregation -----------------------------------------------------------------------------


def test_iqm_and_bootstrap() -> None:
    assert iqm(np.arange(8.0)) == pytest.approx(3.5)  # mean of 2..5
    assert iqm(np.array([0.0, 1.0, 2.0, 100.0])) == pytest.approx(1.5)  # the outlier is cut
    runs = [np.array([10.0, 12, 14]), np.array([20.0, 22, 24]), np.array([30.0, 29, 31])]
    ci = bootstrap_ci(runs, reps=500, seed=1)
    assert ci == bootstrap_ci(runs, reps=500, seed=1)  # seeded
    assert ci["iqm"][0] < iqm(np.concatenate(runs)) < ci["iqm"][1]
    assert 10 < ci["mean"][0] < 21 < ci["mean"][1] < 31
    same = bootstrap_ci([np.array([5.0, 5.0])], reps=50)
    assert same == {"iqm": (5.0, 5.0), "mean": (5.0, 5.0)}


def test_aggregate_groups_tables_and_json(tmp_path: Path) -> None:
    paths = [
        write_eval(tmp_path / f"halfcheetah-tt-seed{s}" / "eval" / "eval.json", [10 + s, 20 + s])
        for s in range(3)
    ]
    bc = write_eval(tmp_path / "bc-seed0" / "eval" / "eval.json", [50, 52], policy="bc")
    groups = aggregate([*map(str, paths), str(bc)], reps=300)
    tt, bcg = groups
    assert tt.label == "TT h5 local/halfcheetah/medium-v0" and bcg.label.startswith("BC ")
    assert [r.mean for r in tt.runs] == pytest.approx([15, 16, 17])
    assert tt.mean == pytest.approx(16) and tt.stderr == pytest.approx(
        np.std([15, 16, 17], ddof=1) / np.sqrt(3)
    )
    assert tt.iqm == pytest.approx(iqm(np.array([10, 20, 11, 21, 12, 22.0])))
    assert tt.iqm_ci[0] <= tt.iqm <= tt.iqm_ci[1] and bcg.stderr is None
    assert tt.n_episodes == 6 and tt.runs[0].label == "halfcheetah-tt-seed0"
    doc = to_json(groups, reps=300)
    assert json.loads(json.dumps(doc))["groups"][0]["n_runs"] == 3
    assert doc["groups"][0]["reference"].startswith("D4RL constants")
    labelled = aggregate([f"mine={paths[0]}", f"mine={paths[1]}", str(paths[2])], reps=10)
    assert [g.label for g in labelled] == ["mine", "TT h5 local/halfcheetah/medium-v0"]
    console = Console(width=80, record=True, color_system=None)
    for table in tables(groups):
        console.print(table)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "halfcheetah-tt-seed0" in text and "D4RL constants" in text and "…" not in text


def test_aggregate_never_mixes_scales(tmp_path: Path) -> None:
    a = write_eval(tmp_path / "a" / "eval.json", [1.0, 2.0])
    b = tmp_path / "b" / "eval.json"
    doc = json.loads(a.read_text())
    doc["summary"]["reference"] = "dataset metadata (0.00 .. 1.00)"
    b.parent.mkdir()
    b.write_text(json.dumps(doc))
    groups, selection = aggregate_evals([f"x={a}", f"x={b}"])  # one run, two scales
    assert groups[0].n_episodes == 2 and len(selection.left_out) == 1
    assert "other settings: reference" in selection.left_out[0][1]
    doc["episodes"][0]["score"] = None
    b.write_text(json.dumps(doc))
    with pytest.raises(TrajplanError, match="no normalized scores"):
        aggregate([str(b)])


def test_cli_plot_and_aggregate(tmp_path: Path) -> None:
    run = write_tt_metrics(tmp_path / "tt-seed0")
    evals = [
        write_eval(tmp_path / f"tt-seed{s}" / "eval" / "eval.json", [s, 2 * s]) for s in (1, 2)
    ]
    out = cli("plot", str(run), "--out", str(tmp_path / "curves.svg"), "--x", "tokens").stdout
    out += cli("plot", "--scores", *map(str, evals), "--out", str(tmp_path / "scores.png")).stdout
    agg = str(tmp_path / "agg.json")
    out += cli("aggregate", *map(str, evals), "--json", agg, "--reps", "100").stdout
    assert "curves.svg" in out and "scores.png" in out and "IQM" in out
    assert json.loads((tmp_path / "agg.json").read_text())["bootstrap"]["reps"] == 100
    bad = cli("plot", str(run), "--out", str(tmp_path / "curves.pdf"), code=2)
    assert ".png or .svg" in bad.stderr


def test_groups_name_the_weighting_and_the_goal_their_runs_trained_with(tmp_path: Path) -> None:
    """BC and wBC runs pooled as one "BC" group, and a goal-conditioned run's evals looked
    like a plain one's: the run's config.json says what its policy is."""
    runs = {  # run -> its config.json's "config" (as bc and train write them)
        "bc": {"action_weighting": 0.0, "goal_dims": None},
        "wbc": {"action_weighting": 2.0, "goal_dims": None},
        "gcbc": {"action_weighting": 0.0, "goal_dims": "0,1"},
        "gctt": {"data": {"goal_dims": "0,1"}},
    }
    for name, config in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"config": config}))
        policy = "tt" if name.endswith("tt") else "bc"
        write_eval(tmp_path / name / "eval" / "eval.json", [10, 20], policy=policy)
    groups = aggregate([str(tmp_path / name) for name in runs], reps=10)
    ds = "local/halfcheetah/medium-v0"
    assert [g.label for g in groups] == [
        f"BC {ds}", f"wBC(2) {ds}", f"BC goal(0,1) {ds}", f"TT h5 goal(0,1) {ds}"
    ]  # fmt: skip
    svg = tmp_path / "scores.svg"
    plot_eval_scores([str(tmp_path / name) for name in runs], svg)
    assert "wbc: wBC(2)" in svg.read_text() and "gctt: TT h5 goal(0,1)" in svg.read_text()
