"""Guards before work (issue 23): memory and disk checked against what a command will need,
and bad values refused up front. Every fault is injected for real (a file-size limit on a
real child process, real command lines, real datasets); each ends in one line on stderr and
exit code 2, before the work, leaving nothing half-written.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HALFCHEETAH_REFS, cli, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


def limited(limit: int | None):
    """preexec_fn: files of the child may not grow past `limit` bytes (writes fail with
    EFBIG, as on a full disk; SIGXFSZ ignored so the child sees the write error). None: no
    limit yet (one is set on the running child later)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def child(
    *args: str, root: Path, limit: int | None = None, wait: bool = True
) -> subprocess.CompletedProcess | subprocess.Popen:
    """`python -m trajplan ARGS` as a child with MINARI_DATASETS_PATH=root, one thread, and
    `ulimit -f limit` (None: no limit: SIGXFSZ only ignored, for a limit set later)."""
    env = dict(os.environ, MINARI_DATASETS_PATH=str(root), OMP_NUM_THREADS="1", COLUMNS="200")
    cmd = [sys.executable, "-m", "trajplan", *[str(a) for a in args]]
    pre = limited(limit)
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, preexec_fn=pre)
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pre
    )


def leftovers(folder: Path) -> list[str]:
    """Every file and folder under `folder` (empty list: nothing, or it does not exist)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# -- disk full (fault 5) -----------------------------------------------------------------------


def test_full_disk_refused_before_the_work(tiny_run, halfcheetah_dataset, minari_root, tmp_path):
    """`ulimit -f` below what a command will write: train (even its lock), bc, eval, plan,
    data collect and hub push --stage stop with one line before their work, and leave no
    folder, lock, staging folder or temporary file behind."""
    run_args = ("--config", "tiny", "--dataset", halfcheetah_dataset, "--threads", "1")
    res = child("train", *run_args, "--out", tmp_path / "t0", root=minari_root, limit=0)
    one_line_error(res, "cannot write run directory", "File too large")
    res = child("train", *run_args, "--out", tmp_path / "t1", root=minari_root, limit=100_000)
    one_line_error(res, "training writes a file of about", "ulimit -f")
    bc = ("bc", "--dataset", halfcheetah_dataset, "--steps", "5", "--threads", "1")
    one_line_error(child(*bc, "--out", tmp_path / "bc", root=minari_root, limit=3000), "ulimit -f")
    quick = ("--episode-steps", "5", "--device", "cpu")
    res = child("eval", tiny_run, *quick, "--out", tmp_path / "ev", root=minari_root, limit=3000)
    one_line_error(res, "the evaluation of 10 episodes writes a file", "ulimit -f")
    plan = ("plan", "--checkpoint", tiny_run, "--max-steps", "3", "--out", tmp_path / "p.json")
    one_line_error(child(*plan, root=minari_root, limit=3000), "the rollout JSON", "ulimit -f")
    stage = ("hub", "push", tiny_run, "you/tiny", "--stage", tmp_path / "stage")
    one_line_error(child(*stage, root=minari_root, limit=3000), "the staged upload", "ulimit -f")
    root = tmp_path / "minari"
    collect = ("data", "collect", "--env", "halfcheetah", "--policy", "random", "--steps", "300")
    res = child(*collect, "--dataset-id", "local/halfcheetah/x-v0", root=root, limit=3000)
    one_line_error(res, "dataset local/halfcheetah/x-v0 (300 steps)", "ulimit -f")
    assert leftovers(root) == []  # no dataset, no hidden staging folder
    assert leftovers(tmp_path) in ([], ["minari"])  # no run, lock, stage or JSON


def test_eval_keeps_its_scores_when_the_disk_fills_up(tiny_run, minari_root, tmp_path):
    """The disk fills up while eval plays (the limit is set on the running process, after
    its up-front check): its summary table still reaches stdout, stderr has one line, exit 2,
    and no half-written eval.json or temporary file is left."""
    out = tmp_path / "ev"
    args = ("eval", tiny_run, "--episodes", "2", "--episode-steps", "60", "--out", out)
    proc = child(*args, "--device", "cpu", "--no-progress", root=minari_root, wait=False)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.iterdir())):  # its folder: the check has passed
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (0, 0))  # the disk is full now
    stdout, stderr = proc.communicate(timeout=300)
    res = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
    one_line_error(res, "cannot write", "eval.json")
    assert "not saved: the table above" in stdout
    row = next(line for line in stdout.splitlines() if line.strip().startswith("│ tiny"))
    assert " 2 " in row  # the two episodes' row: episodes, return, score, ms/step
    assert leftovers(out) == []  # no eval.json, no .tmp, and its empty folder removed


# -- memory (fault 6) --------------------------------------------------------------------------


def test_memory_guard_names_the_option(tiny_run: Path, halfcheetah_dataset, tmp_path) -> None:
    """Sizes that cannot fit are refused in a second with the option to lower: a billion
    episodes (nothing per episode is allocated first), huge beams and expansions, BC widths."""
    cpu0 = time.process_time()
    out = tmp_path / "ev"
    res = cli("eval", tiny_run, "--episodes", "1000000000", "--out", out, code=2)
    one_line_error(res, "planning 1,000,000,000 episodes", "GiB", "lower --episodes")
    wide = ("--beam-width", "100000", "--n-expand", "100", "--episodes", "1")
    one_line_error(cli("eval", tiny_run, *wide, "--out", out, code=2), "lower --beam-width")
    plan = ("plan", "--checkpoint", tiny_run, "--beam-width", "10000000")
    one_line_error(cli(*plan, "--out", tmp_path / "p.json", code=2), "lower --beam-width")
    expand = ("--beam-width", "4", "--n-expand", "100000000", "--episodes", "1")
    one_line_error(cli("eval", tiny_run, *expand, "--out", out, code=2), "lower --n-expand")
    bc = ("bc", "--dataset", halfcheetah_dataset, "--out", tmp_path / "bc")
    res = cli(*bc, "--hidden", "1000000,1000000", code=2)
    one_line_error(res, "bc with hidden sizes [1000000, 1000000]", "lower --hidden")
    assert time.process_time() - cpu0 < 10 and leftovers(tmp_path) == []


def test_plan_estimate_bounds_the_real_peak(tiny_run: Path, tmp_path: Path) -> None:
    """planner.memory.plan_bytes against the peak memory (ru_maxrss) of a real planning child: above
    it (a guard that refuses only what cannot fit), and within 20x of it (not absurdly so)."""
    script = (
        "import dataclasses, json, resource, sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from trajplan.runs import load_run\n"
        "from trajplan.evaluation.evaluate import run_episodes\n"
        "from trajplan.planner.memory import plan_bytes\n"
        "run = load_run(sys.argv[1], 'cpu')\n"
        "run.plan = dataclasses.replace(run.plan, beam_width=6000, n_expand=2)\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "run_episodes(run, n_episodes=2, episode_steps=2, device='cpu', progress=False)\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "print(json.dumps([peak - base, plan_bytes(run.checkpoint.model.cfg, run.plan, 2)]))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script, str(tiny_run)], capture_output=True, text=True
    )
    used, estimate = json.loads(res.stdout.splitlines()[-1])
    # The child's measured peak varies with the allocator's reuse: over 415 MB when this test
    # runs alone, 145-186 MB inside the full suite (2026-12-07, the same 1.25 GB estimate),
    # and 137 MB on the CI machine (9.1x), so "not absurdly above" is 20x: it still catches an
    # estimate off by orders of magnitude; that the estimate bounds the peak is the guard's promise.
    assert used <= estimate <= 20 * used, (used, estimate)


def test_threads_capped() -> None:
    """--threads far beyond the cores (2000 crashed OpenMP) is one line with the cap."""
    from trajplan.guards import max_threads

    res = cli("eval", "nowhere", "--threads", "2000", code=2)
    one_line_error(res, "--threads 2000", f"at most {max_threads()}")


# -- values refused up front (faults 7, 8 and the low list) -----------------------------------


def test_seeds_checked_by_one_rule(tiny_run: Path, halfcheetah_dataset: str, tmp_path) -> None:
    """--seed outside [0, 2^32) is one line in every command that takes one (it was a
    traceback from gymnasium, numpy or torch, after the work had begun)."""
    commands = [
        ("eval", tiny_run),
        ("plan", "--checkpoint", tiny_run),
        ("bc", "--dataset", halfcheetah_dataset, "--out", tmp_path / "bc"),
        ("iql", "--dataset", halfcheetah_dataset, "--out", tmp_path / "iql"),
        ("data", "collect", "--env", "hopper", "--policy", "random", "--steps", "10"),
        ("aggregate", tiny_run),
        ("train", "--config", "tiny", "--dataset", halfcheetah_dataset, "--out", tmp_path / "t"),
    ]
    for args in commands:
        for seed in ("-1", str(2**32)):
            one_line_error(cli(*args, "--seed", seed, code=2), "--seed must be an integer")
    big = cli("train", *commands[-1][1:], "--seed", "18000000000000", code=2)
    one_line_error(big, "--seed", "18000000000000")
    last = cli("eval", tiny_run, "--seed", str(2**32 - 5), "--episodes", "10", code=2)
    one_line_error(last, "the last episode's seed", str(2**32 + 4))
    assert leftovers(tmp_path) == []


def test_train_values_refused_before_the_run(halfcheetah_dataset: str, tmp_path: Path) -> None:
    """Values that used to fail after training had started (the run left `starting`) are
    one line before anything is written: no run directory, no lock."""
    out = tmp_path / "run"
    base = ("train", "--config", "tiny", "--dataset", halfcheetah_dataset, "--out", out)
    for extra, words in (
        (("--set", "train.val_every=0"), ("train.val_every must be at least 1",)),
        (("--set", "train.eval_seed=-1"), ("train.eval_seed",)),
        (("--set", "train.eval_seed=4294967295"), ("train.eval_seed + train.eval_episodes",)),
        (("--time-limit", "0"), ("train.time_limit_s must be a number > 0",)),
        (("--time-limit", "-5"), ("train.time_limit_s",)),
        (("--time-limit", "nan"), ("train.time_limit_s", "nan")),
        (("--set", "train.lr.x=1"), ("'lr' is a key, not a section",)),
        (("--set", "a.b.c=1"), ("unknown section 'a'",)),
    ):
        one_line_error(cli(*base, *extra, code=2), *words)
    assert not out.exists()


def test_resume_never_ignores_dataset_or_env(tiny_run: Path, halfcheetah_dataset: str) -> None:
    """--resume with another --dataset or --env is one line (they were silently ignored);
    the run's own values are accepted; the run is not touched."""
    before = {p.name: p.stat().st_mtime_ns for p in tiny_run.iterdir()}
    res = cli("train", "--resume", "--out", tiny_run, "--dataset", "other/x/y-v0", code=2)
    one_line_error(res, "its own dataset", halfcheetah_dataset, "drop --dataset")
    res = cli("train", "--resume", "--out", tiny_run, "--env", "hopper", code=2)
    one_line_error(res, "its own env 'halfcheetah'", "drop --env")
    assert {p.name: p.stat().st_mtime_ns for p in tiny_run.iterdir()} == before


def test_collect_refuses_bad_ranges(tmp_path: Path, monkeypatch) -> None:
    """Negative noise or random-action rates outside [0, 1] were silently ignored."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    args = ("data", "collect", "--env", "halfcheetah", "--policy", "random", "--steps", "50")
    for extra, words in (
        (("--noise", "-1"), ("--noise takes stds >= 0", "-1:-1")),
        (("--noise", "0.5:0.1"), ("--noise", "LO <= HI")),
        (("--mix-random", "-0.5"), ("--mix-random takes rates in [0, 1]", "-0.5:-0.5")),
        (("--mix-random", "0:1.5"), ("--mix-random",)),
    ):
        one_line_error(cli(*args, *extra, code=2), *words)
    assert leftovers(tmp_path) == []


def equal_refs_dataset(root: Path, src_root: Path, src_id: str, refs: tuple) -> str:
    """A copy of a fixture dataset whose metadata holds the reference scores `refs`."""
    dst_id = "test/halfcheetah/badrefs-v0"
    shutil.copytree(src_root / src_id, root / dst_id)
    meta_path = root / dst_id / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text().replace(src_id, dst_id))
    meta["ref_min_score"], meta["ref_max_score"] = refs
    meta_path.write_text(json.dumps(meta))
    return dst_id


def test_equal_reference_scores(minari_root, halfcheetah_dataset, tmp_path, monkeypatch):
    """Equal reference scores in a dataset's metadata (ZeroDivisionError after every episode,
    or at the first evaluation during training) are set aside with the reason, and the env's
    D4RL constants normalize instead: training with evaluations finishes, eval scores."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    dataset = equal_refs_dataset(root, minari_root, halfcheetah_dataset, (5.0, 5.0))
    run = tmp_path / "run"
    live = ("--set", "train.eval_every=2", "--set", "train.eval_episode_steps=3")
    cli("train", "--config", "tiny", "--dataset", dataset, "--out", run, "--max-steps", "4",
        "--set", "train.eval_episodes=1", *live, "--no-progress")  # fmt: skip
    doc = json.loads((run / "config.json").read_text())
    assert doc["status"] == "finished"
    assert doc["ref_source"].endswith("dataset metadata ignored: equal (5 .. 5): no scale")
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    scores = [r["score_mean"] for r in evals if r.get("kind") == "eval"]
    assert scores and all(math.isfinite(s) for s in scores)
    cli("eval", run, "--episodes", "1", "--episode-steps", "3", "--out", tmp_path / "ev")
    result = json.loads(next((tmp_path / "ev").glob("*/eval.json")).read_text())
    assert math.isfinite(result["episodes"][0]["score"])


def test_unusable_references_and_strict_json(tmp_path: Path) -> None:
    """NaN, equal or upside-down reference scores never normalize; JSON files hold null
    for NaN and inf (bare NaN is not JSON), through the one writer every file uses."""
    from trajplan.envs.references import references_for, unusable_reason
    from trajplan.runtime import write_json

    assert unusable_reason(-1.0, 1.0) is None
    for lo, hi, why in ((5.0, 5.0, "equal"), (math.nan, 1.0, "not finite"), (2.0, 1.0, "above")):
        assert why in unusable_reason(lo, hi)
        refs = references_for("halfcheetah", lo, hi, "dataset metadata")
        assert (refs.ref_min, refs.ref_max) == (-280.178953, 12135.0)
        assert why in refs.source and refs.score(-280.178953) == 0.0
    path = write_json(tmp_path / "x.json", {"ref_min": math.nan, "r": [math.inf, 1.5]})

    def refuse(token: str) -> None:
        raise AssertionError(f"not strict JSON: {token}")

    doc = json.loads(path.read_text(), parse_constant=refuse)
    assert doc == {"ref_min": None, "r": [None, 1.5]}


# -- issue 30: iql, ensemble and predict guarded like bc and train ----------------------------


def held_out_root(minari_root: Path, halfcheetah_dataset: str, root: Path) -> str:
    """A MINARI_DATASETS_PATH holding the fixture's HalfCheetah dataset and a copy of it
    under another id: episodes `predict --dataset` may hold out from a run trained on it."""
    shutil.copytree(minari_root / halfcheetah_dataset, root / halfcheetah_dataset)
    return equal_refs_dataset(root, minari_root, halfcheetah_dataset, HALFCHEETAH_REFS)


def test_memory_guard_iql_ensemble_predict(tiny_run, minari_root, halfcheetah_dataset, tmp_path,
                                           monkeypatch):  # fmt: skip
    """Widths, batches and samples that cannot fit (allocation tracebacks, or gigabytes
    taken silently) are one line naming the option to lower, and leave no folder."""
    cpu0 = time.process_time()
    data = ("--dataset", halfcheetah_dataset, "--steps", "5", "--no-progress")
    for cmd in ("iql", "ensemble"):
        out = ("--out", tmp_path / cmd)
        res = cli(cmd, *data, *out, "--hidden", "1000000,1000000", code=2)
        one_line_error(res, "hidden sizes [1000000, 1000000]", "GiB", "lower --hidden")
        res = cli(cmd, *data, *out, "--batch-size", "1000000000", code=2)
        one_line_error(res, "batch size 1,000,000,000", "lower --batch-size")
    res = cli("ensemble", *data, "--out", tmp_path / "ensemble", "--members", "1000000000", code=2)
    one_line_error(res, "an ensemble of 1000000000 members", "lower --members")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    other = held_out_root(minari_root, halfcheetah_dataset, tmp_path / "minari")
    pred = ("predict", tiny_run, "--dataset", other, "--horizon", "5", "--device", "cpu")
    res = cli(*pred, "--starts", "2", "--samples", "1000000000", "--out", tmp_path / "p", code=2)
    one_line_error(res, "predicting 2 starts x 1,000,000,000 samples", "lower --samples")
    assert time.process_time() - cpu0 < 20 and leftovers(tmp_path) == ["minari"] + sorted(
        str(p.relative_to(tmp_path)) for p in (tmp_path / "minari").rglob("*")
    )


def test_disk_guard_iql_ensemble_predict(tiny_run, minari_root, halfcheetah_dataset, tmp_path):
    """`ulimit -f` below what iql (its state), ensemble (its weights) and predict (its
    report) write: one line before the work (iql lost up to --save-every updates, predict
    and ensemble failed after it), and no folder left behind."""
    other = held_out_root(minari_root, halfcheetah_dataset, tmp_path / "minari")
    root = tmp_path / "minari"
    data = ("--dataset", halfcheetah_dataset, "--steps", "5", "--no-progress")
    res = child("iql", *data, "--out", tmp_path / "out" / "iql", root=root, limit=100_000)
    one_line_error(res, "the IQL run", "ulimit -f")
    res = child("ensemble", *data, "--out", tmp_path / "out" / "ens", root=root, limit=10_000)
    one_line_error(res, "the ensemble run", "ulimit -f")
    pred = ("predict", tiny_run, "--dataset", other, "--horizon", "5", "--device", "cpu")
    res = child(*pred, "--out", tmp_path / "out" / "p", root=root, limit=10_000)
    one_line_error(res, "the prediction report", "ulimit -f")
    assert leftovers(tmp_path / "out") == []


def test_out_below_a_file_refused_before_the_work(tiny_run, halfcheetah_dataset, tmp_path):
    """--out below a regular file (a folder that cannot be made: as root, the way to a
    read-only one) or a file where the folder should be: one line before any data is read
    or any update made (bc and ensemble ended in a traceback after all their training)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    data = ("--dataset", halfcheetah_dataset, "--steps", "5", "--no-progress")
    for cmd in ("bc", "ensemble", "iql"):
        res = cli(cmd, *data, "--out", blocker / "run", code=2)
        one_line_error(res, str(blocker / "run"), "a-file", "not a folder" if cmd != "iql" else "")
        one_line_error(cli(cmd, *data, "--out", blocker, code=2), "a-file")
    res = cli("predict", tiny_run, "--out", blocker / "p", code=2)
    one_line_error(res, "cannot create --out folder", "is a file, not a folder")
    assert blocker.read_text() == "keep me" and leftovers(tmp_path) == ["a-file"]


def test_non_numeric_reference_in_a_run_config(tiny_run: Path, tmp_path: Path) -> None:
    """A run's config.json edited to hold a ref_min that is not a number (a ValueError
    traceback at eval): set aside with the reason like any unusable pair, the env's D4RL
    constants normalize, the evaluation is saved."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    doc = json.loads((run / "config.json").read_text())
    for bad in ("abc", [1]):
        (run / "config.json").write_text(json.dumps({**doc, "ref_min": bad}))
        out = tmp_path / f"ev-{type(bad).__name__}"
        cli("eval", run, "--episodes", "1", "--episode-steps", "2", "--out", out, "--no-progress")
        result = json.loads(next(out.glob("*/eval.json")).read_text())
        ref = result["summary"]["reference"]
        assert "D4RL constants" in ref and "not numbers" in ref
        assert math.isfinite(result["episodes"][0]["score"])
