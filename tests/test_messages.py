"""What the commands and the package say, checked on real runs: a run stopped inside its
first epoch says how much of it it trained, the curves plot draws every curve its legend
names, each episode's progress line names its run, predict prints its error up to its
horizon, a training command's help speaks of training, and installing the package warns
about nothing in its metadata."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def short_run(minari_datasets, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`train --config tiny` on the Hopper fixture stopped by --max-steps inside its first
    epoch, with a validation split: (the run, what train printed)."""
    out = tmp_path_factory.mktemp("short") / "tt"
    done = cli("train", "--config", "tiny", "--dataset", minari_datasets.hopper, "--out", out,
               "--max-steps", "3", "--set", "data.val_fraction=0.25", "--set", "train.batch_size=4",
               "--no-progress",
               "--threads", "1")  # fmt: skip
    return out, " ".join(done.stdout.split())  # unwrapped


def test_a_run_stopped_inside_an_epoch_says_how_much_it_trained(short_run) -> None:
    import json

    run, printed = short_run
    doc = json.loads((run / "config.json").read_text())
    per = doc["steps_per_epoch"]
    assert doc["step"] == 3 < per and doc["epoch"] == 0
    assert "(0 epochs)" not in printed  # "finished after 3 steps (0 epochs)" read as nothing
    assert f"after 3 steps ({3 / per:.2g} of an epoch of {per} steps)" in printed, printed


def test_the_curves_plot_draws_every_curve_its_legend_names(short_run, tmp_path: Path) -> None:
    """One validation line (at the end of a run shorter than an epoch) was in the legend and
    drawn nowhere: a line through one point is invisible without a marker."""
    import json

    run, _ = short_run
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows].count("val") == 1
    svg = tmp_path / "curves.svg"
    cli("plot", run, "--out", svg)
    text = svg.read_text()
    assert "tt (validation)" in text
    # a circle marker (a path of curves; the ticks are straight) at the lone validation point
    # of each of the 5 panels (loss, 4 token kinds), and in each legend
    marks = re.findall(r'<path id="(m[0-9a-f]+)" d="([^"]*)"', text)
    circles = [name for name, d in marks if "C" in d]
    assert len(circles) == 1 and text.count(f'xlink:href="#{circles[0]}"') >= 10


def test_every_progress_line_names_its_run(tiny_run: Path, tmp_path: Path) -> None:
    """`eval A B` printed "planning halfcheetah" and "episode seed 0: return ..." for each
    run alike: which run is it? (no terminal: the plain lines a log gets)."""
    import shutil

    bc = tmp_path / "bc"
    ds = "test/halfcheetah/random-v0"
    cli("bc", "--dataset", ds, "--out", bc, "--steps", "10", "--hidden", "8", "--no-progress")
    tt = shutil.copytree(tiny_run, tmp_path / "tt")
    small = ("--episodes", "2", "--episode-steps", "2", "--horizon", "2", "--beam-width", "2")
    one = cli("eval", tt, bc, *small)
    lines = (one.stdout + one.stderr).splitlines()
    assert any(ln.startswith("planning tt on halfcheetah") for ln in lines), lines
    assert any(ln.startswith("planning bc on halfcheetah") for ln in lines), lines
    two = cli("eval", tt, bc, *small, "--workers", "2")
    lines = (two.stdout + two.stderr).splitlines()
    episodes = [ln for ln in lines if ln.startswith("episode seed")]
    assert len(episodes) == 4 and all(", 1/2 done)" in ln or ", 2/2 done)" in ln for ln in episodes)
    assert sorted(ln.rsplit("(", 1)[1].split(",")[0] for ln in episodes) == ["bc", "bc", "tt", "tt"]
    assert any(ln.startswith("planning on 2 workers (tt)") for ln in lines), lines


def test_predict_prints_the_error_up_to_its_horizon(short_run, tmp_path: Path) -> None:
    """`predict` printed the error at step 10 only (and nothing below a horizon of 10): it
    prints steps 1, 10, 50, 100 and the last, those its horizon reaches, for each model."""
    import json

    run, _ = short_run
    out = tmp_path / "pred"
    shown = cli("predict", run, "--horizon", "3", "--starts", "2", "--samples", "2",
                "--out", out, "--no-progress", "--threads", "1").stdout  # fmt: skip
    mse = json.loads((out / "predict.json").read_text())["models"]["tt"]["mse_all"]
    lines = [ln for ln in shown.splitlines() if ln.startswith("step ")]
    assert lines == [f"step 1: tt mse {mse[0]:.4g}", f"step 3: tt mse {mse[2]:.4g}"], shown


@pytest.mark.parametrize("command", ["bc", "iql", "ensemble", "train"])
def test_a_training_commands_help_speaks_of_training(command: str) -> None:
    """--threads of bc, iql and ensemble said "Planning runs many tiny ops" (copied from
    plan and eval)."""
    text = cli(command, "--help", process=True).stdout
    assert "--threads" in text and "Planning" not in text and "planning" not in text.lower()


def test_the_license_metadata_warns_about_nothing() -> None:
    """`pip install -e .` warned three times that a TOML-table license is deprecated:
    the metadata is an SPDX expression and the license file, as setuptools reads them."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert not [str(w.message) for w in caught if "licen" in str(w.message).lower()]
    assert dist.metadata.license_expression == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    proc = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as m; print(m.version('trajplan'))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert proc.stdout.strip()
