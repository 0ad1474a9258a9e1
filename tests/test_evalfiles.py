"""Runs and their eval folders as a new user makes them (`train --seeds --jobs`, `eval`
again and again, `aggregate`, `plot --scores`), and the run-folder faults around them:
one run counts once by a printed rule, incomparable evals never pool, non-run paths are
skipped, outputs are checked before the work, a run killed while starting goes on, a
damaged metrics line is skipped, a resumed run logs what an uninterrupted one logs, the best
epoch is one whose weights were kept, the hub shares one checkpoint and fails in one line.
Everything is real: runs trained by the CLI, evals written by `trajplan eval`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import cli, one_line_error

SMALL_PLAN = ("--horizon", "2", "--beam-width", "4", "--threads", "1", "--no-progress")


@pytest.fixture(scope="module")
def seeds_out(minari_datasets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`train --seeds 0,1 --jobs 2` of the tiny config on the Hopper fixture: OUT/seed0,
    OUT/seed1, and beside them seed0.log, seed1.log and seeds-config.yaml."""
    out = tmp_path_factory.mktemp("seeds") / "tt"
    cli("train", "--config", "tiny", "--dataset", minari_datasets.hopper, "--seeds", "0,1",
        "--jobs", "2", "--out", out, "--max-steps", "4", "--no-progress")  # fmt: skip
    assert {p.name for p in out.iterdir()} >= {"seed0", "seed0.log", "seeds-config.yaml"}
    return out


def evals_of(run: Path) -> list[Path]:
    return sorted(run.glob("eval/*/eval.json"))


def test_one_run_counts_once_by_the_printed_rule(seeds_out: Path, tmp_path: Path) -> None:
    out = seeds_out
    # README step 3 after --seeds --jobs: the glob also matches the logs and the config
    first = cli("eval", *sorted(out.glob("seed*")), "--episodes", "2", *SMALL_PLAN)
    assert "skipped (not run directories)" in first.stderr and "seeds-config.yaml" in first.stderr
    assert [len(evals_of(out / s)) for s in ("seed0", "seed1")] == [1, 1]
    cli("eval", out / "seed0", out / "seed1", "--episodes", "2", *SMALL_PLAN)  # again
    cli("eval", out / "seed0", "--episodes", "2", "--episode-steps", "3", *SMALL_PLAN)
    cli("eval", out / "seed0", "--episodes", "2", *SMALL_PLAN[2:], "--horizon", "3",
        "--beam-width", "4")  # fmt: skip

    def newest_h2(run: Path) -> Path:  # the newest full-length eval at horizon 2
        return max((p for p in evals_of(run) if "-h2-b4-2" in str(p)), key=lambda p: (
            json.loads(p.read_text())["created"], p.stat().st_mtime))  # fmt: skip

    newest = {s: newest_h2(out / s) for s in ("seed0", "seed1")}
    # an interrupted eval, as the runner saves one: partial episodes, marked interrupted
    cut = out / "seed1" / "eval" / "2ep-seed0-h2-b4-cut"
    shutil.copytree(newest["seed1"].parent, cut)
    doc = json.loads((cut / "eval.json").read_text())
    doc.update(interrupted=True, created="9999", episodes=doc["episodes"][:1])
    (cut / "eval.json").write_text(json.dumps(doc))
    full = {s: [p for p in evals_of(out / s) if p.parent != cut] for s in ("seed0", "seed1")}

    agg = tmp_path / "agg.json"
    text = cli("aggregate", f"{out}/seed0/eval", f"{out}/seed1/eval", "--json", agg).stdout
    assert "one eval per run" in text and "left out 4 eval(s)" in text
    got = json.loads(agg.read_text())
    group, at_h3 = got["groups"]  # another horizon: another policy, its own group
    assert group["n_runs"] == 2 and group["n_episodes"] == 4 and group["comparable"]
    assert at_h3["label"].startswith("TT h3 ") and at_h3["n_runs"] == 1
    assert {r["path"] for r in group["runs"]} == {str(newest["seed0"]), str(newest["seed1"])}
    reasons = {  # seed/name -> why
        f"{Path(x['path']).parts[-4]}/{Path(x['path']).parts[-2]}": x["reason"]
        for x in got["selection"]["left_out"]
    }
    assert reasons[f"seed1/{cut.name}"] == "interrupted: partial episodes"
    capped = "seed0/" + next(p for p in full["seed0"] if "capped3" in str(p)).parent.name
    assert reasons[capped] == (
        f"other settings: episode_steps 3 (kept: None); kept {newest['seed0']} instead "
        "(full-length episodes count before capped ones)"
    )
    assert sum("an older eval of the same run" in r for r in reasons.values()) == 2
    # the same runs, however they are named
    # the README's glob, the runs, the runs' glob (with seed0.log ...), their parent
    for items in ([*map(str, out.glob("*/eval/*/eval.json"))], [out / "seed0", out / "seed1"],
                  sorted(out.glob("seed*")), [out]):  # fmt: skip
        again = tmp_path / "again.json"
        cli("aggregate", *items, "--json", again)
        assert json.loads(again.read_text())["groups"] == got["groups"], items
    curves = cli("plot", *sorted(out.glob("seed*")), "--out", tmp_path / "curves.png")
    assert "skipped (not run directories)" in curves.stderr and "seed0.log" in curves.stderr
    svg = tmp_path / "scores.svg"
    shown = cli("plot", "--scores", out / "seed0", f"{out}/seed1/eval", "--out", svg).stdout
    assert "left out 4 eval(s)" in shown and "6 episodes" in svg.read_text()  # one bar a run


def test_eval_json_records_the_weights_it_evaluated(seeds_out: Path, tmp_path: Path) -> None:
    run = seeds_out / "seed0"
    manifest = json.loads((run / "config.json").read_text())
    for weights, step in (("last", manifest["step"]), ("best", manifest["best_step"])):
        ev = tmp_path / weights
        cli("eval", run, "--weights", weights, "--episodes", "1", "--episode-steps", "2",
            "--out", ev, *SMALL_PLAN)  # fmt: skip
        doc = json.loads(next(ev.glob("*/eval.json")).read_text())
        assert doc["step"] == step and doc["weights"] == weights
        assert (
            Path(doc["weights_file"]).name == f"{'model' if weights == 'last' else 'best'}"
            ".safetensors"
        )


def test_incomparable_evals_never_pool(seeds_out: Path, tiny_run: Path, tmp_path: Path) -> None:
    other = tmp_path / "hc"  # the HalfCheetah run, evaluated into a folder of its own
    cli("eval", tiny_run, "--episodes", "1", "--episode-steps", "3", "--out", other, *SMALL_PLAN)
    seed0 = seeds_out / "seed0"
    if not evals_of(seed0):
        cli("eval", seed0, "--episodes", "1", *SMALL_PLAN)
    agg = tmp_path / "mix.json"
    text = cli("aggregate", f"mine={seed0}", f"mine={other}", "--json", agg).stdout
    (group,) = json.loads(agg.read_text())["groups"]
    assert group["label"] == "mine" and group["n_runs"] == 1  # the Hopper run alone
    assert "other settings: env HalfCheetah-v5 (kept: Hopper-v5)" in text
    # default groups: each dataset its own group, side by side
    both = json.loads((cli("aggregate", seed0, other, "--json", agg), agg.read_text())[1])
    datasets = [g["label"].split()[-1] for g in both["groups"]]  # (seed0's h3 eval: a group)
    assert set(datasets) == {"test/hopper/random-v0", "test/halfcheetah/random-v0"}
    assert all(g["n_runs"] == 1 for g in both["groups"])
    # nothing complete to compare: one line
    cut = tmp_path / "cut" / "eval.json"
    cut.parent.mkdir()
    doc = json.loads(next(other.glob("*/eval.json")).read_text())
    cut.write_text(json.dumps({**doc, "interrupted": True}))
    one_line_error(cli("aggregate", cut, code=2), "no complete eval to compare", "interrupted")
    one_line_error(cli("aggregate", tmp_path / "nothing", code=2), "no eval.json at")


def test_outputs_are_checked_before_the_work(seeds_out: Path, tmp_path: Path) -> None:
    run = seeds_out / "seed1"
    folder = tmp_path / "folder"
    folder.mkdir()
    failed = cli("aggregate", run, "--json", folder, code=2)
    one_line_error(failed, "--json file", "is a folder")
    assert failed.stdout == ""  # refused before any table
    one_line_error(cli("plan", "--checkpoint", run, "--out", folder, "--max-steps", "2",
                       *SMALL_PLAN[:4], code=2), "--out file", "is a folder")  # fmt: skip
    assert not list(run.glob("plan-seed*.json"))
    one_line_error(cli("eval", seeds_out / "seed0.log", code=2), "no run directory among")


def test_eval_checks_its_video_folder_before_planning(seeds_out: Path, tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg")  # --video needs the video extra first
    run = seeds_out / "seed1"
    blocker = tmp_path / "videos"
    blocker.write_text("a file where the video folder should go")
    before = evals_of(run)
    one_line_error(cli("eval", run, "--episodes", "1", "--video", blocker, *SMALL_PLAN,
                       code=2), "video folder")  # fmt: skip
    assert evals_of(run) == before  # no evaluation ran


def test_plan_env_finds_runs_of_a_seeds_folder(seeds_out: Path) -> None:
    shown = cli("plan", "--env", "hopper", "--runs", seeds_out.parent, "--max-steps", "2",
                *SMALL_PLAN[:4], "--out", seeds_out.parent / "plan.json").stdout  # fmt: skip
    assert f"{seeds_out.name}/seed" in shown.replace("\n", "")


def test_a_run_killed_while_starting_goes_on(hopper_dataset: str, tmp_path: Path) -> None:
    out = tmp_path / "tt"
    (out / "seed0").mkdir(parents=True)
    (out / "seed0" / ".lock").write_text("12345\n")  # all a kill during start-up leaves
    cli("train", "--config", "tiny", "--dataset", hopper_dataset, "--seeds", "0", "--out", out,
        "--resume", "--max-steps", "2", "--no-progress", "--threads", "1")  # fmt: skip
    assert json.loads((out / "seed0" / "config.json").read_text())["status"] == "finished"
    for resume in (("--resume",), ()):  # child processes: with --resume or without
        jobs = tmp_path / f"jobs{len(resume)}"
        for s in (0, 1):
            (jobs / f"seed{s}").mkdir(parents=True)
            (jobs / f"seed{s}" / ".lock").write_text("12345\n")
        cli("train", "--config", "tiny", "--dataset", hopper_dataset, "--seeds", "0,1",
            "--jobs", "2", "--out", jobs, *resume, "--max-steps", "2", "--no-progress")  # fmt: skip
        for s in (0, 1):
            assert json.loads((jobs / f"seed{s}" / "config.json").read_text())["step"] == 2
    single = tmp_path / "single"
    single.mkdir()
    (single / ".lock").write_text("12345\n")
    one_line_error(cli("train", "--out", single, "--resume", code=2), "without --resume")
    cli("train", "--config", "tiny", "--dataset", hopper_dataset, "--out", single,
        "--max-steps", "2", "--no-progress", "--threads", "1")  # fmt: skip
    assert (single / "model.safetensors").is_file()


def test_a_damaged_metrics_line_is_skipped(seeds_out: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(seeds_out / "seed0", run, ignore=shutil.ignore_patterns("eval"))
    lines = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (run / "metrics.jsonl").write_bytes(
        b"".join([lines[0], b'{"kind": "tr\xff\xfe"}\n', *lines[1:]])
    )
    plotted = cli("plot", run, "--out", tmp_path / "c.png")
    assert plotted.stderr.count("skipped 1 line(s) that are not UTF-8") == 1
    cli("eval", run, "--episodes", "1", "--episode-steps", "2", *SMALL_PLAN)
    cli("train", "--resume", "--out", run, "--max-steps", "6", "--no-progress", "--threads", "1")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 6 and b"\xff" not in (run / "metrics.jsonl").read_bytes()


@pytest.mark.usefixtures("one_thread")
def test_a_resumed_run_logs_what_an_uninterrupted_one_logs(
    hopper_dataset: str, tmp_path: Path
) -> None:
    base = ("--config", "tiny", "--dataset", hopper_dataset, "--no-progress", "--threads", "1",
            "--set", "train.log_every=4")  # fmt: skip
    cli("train", *base, "--out", tmp_path / "a", "--set", "train.epochs=4")
    cli("train", *base, "--out", tmp_path / "b", "--set", "train.epochs=2")
    cli("train", "--resume", "--out", tmp_path / "b", "--set", "train.epochs=4", "--no-progress")

    def train_lines(run: str) -> dict[int, float]:
        rows = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().split("\n")
                if x]  # fmt: skip
        return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}

    a, b = train_lines("a"), train_lines("b")
    # every line of the whole run, the first one after the stop too; b also has the line
    # its first session wrote at its last step (2 epochs in: step 6, not a multiple of 4)
    assert a.items() <= b.items() and len(set(b) - set(a)) == 1
    doc_a, doc_b = (json.loads((tmp_path / r / "config.json").read_text()) for r in "ab")
    assert doc_a["last_loss"] == doc_b["last_loss"] and doc_a["step"] == doc_b["step"]
    ta, tb = (torch.load(tmp_path / r / "state.pt", weights_only=True) for r in "ab")
    assert all(torch.equal(ta["model"][k], tb["model"][k]) for k in ta["model"])


def test_the_best_epoch_is_one_whose_weights_were_kept(hopper_dataset: str, tmp_path: Path) -> None:
    """save_every 2: an epoch that ends between checkpoints cannot be config.json's best
    (its weights are gone); best.safetensors and config.json name the same epoch."""
    from safetensors import safe_open

    from trajplan.configs import load_config
    from trajplan.training.loop import Trainer
    from trajplan.training.prepare import DistInfo

    cfg = load_config("tiny")
    cfg.dataset, cfg.train.save_every, cfg.train.epochs = hopper_dataset, 2, 10
    cpu = torch.device("cpu")
    trainer = Trainer.setup(cfg, tmp_path / "run", False, cpu, None, False, "runs", DistInfo())
    st = trainer.state
    for mean in (4.0, 5.0, 3.0, 4.5):  # epochs 0-3; checkpoints after epochs 1 and 3
        st.step += 3
        trainer.saver.after_epoch(st, st.end_epoch(mean), last=False)
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (doc["best_epoch"], doc["best_loss"], doc["best_step"]) == (3, 4.5, 12)
    with safe_open(str(tmp_path / "run" / "best.safetensors"), framework="numpy") as f:
        assert f.metadata()["step"] == "12" and f.metadata()["epoch"] == "4"
    trainer.close()


def test_hub_shares_one_checkpoint(seeds_out: Path, tmp_path: Path) -> None:
    """A folder whose files are of two checkpoints (a run written while it is copied) is
    never staged: the copy is retried, then refused in one line; a whole run stages."""
    run, later = tmp_path / "run", tmp_path / "later"
    shutil.copytree(seeds_out / "seed0", run, ignore=shutil.ignore_patterns("eval"))
    shutil.copytree(run, later)
    cli("train", "--resume", "--out", later, "--max-steps", "8", "--no-progress", "--threads", "1")
    torn = tmp_path / "torn"
    shutil.copytree(run, torn)
    shutil.copy2(later / "model.safetensors", torn / "model.safetensors")  # step 8, config 4
    stage = tmp_path / "stage"
    failed = cli("hub", "push", torn, "you/x", "--stage", stage, code=2)
    one_line_error(failed, "wrote checkpoints while it was copied", "model.safetensors at 8")
    assert not stage.exists()
    cli("hub", "push", later, "you/x", "--stage", stage)
    assert json.loads((stage / "config.json").read_text())["step"] == 8


def test_hub_offline_is_one_line(seeds_out: Path, tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    offline = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_none", "HF_HUB_OFFLINE": "0"}
    pushed = cli("hub", "push", seeds_out / "seed0", "you/x", code=2, process=True, env=offline)
    one_line_error(pushed, "cannot reach the Hugging Face Hub", "(offline?)")
    pulled = cli("hub", "pull", "you/x", "--out", tmp_path / "p", code=2, process=True,
                 env=offline)  # fmt: skip
    one_line_error(pulled, "cannot reach the Hugging Face Hub", "(offline?)")
    assert not (tmp_path / "p").exists()


def test_a_policy_run_plays_the_same_episodes_on_any_number_of_workers(
    hopper_dataset: str, tmp_path: Path
) -> None:
    """An actor's action for one observation does not depend on the batch it is in (BLAS's
    float32 kernels round batches of different sizes differently): `eval --workers K`, and
    the demo on a machine with another core count, play the same BC episodes."""
    import numpy as np

    from trajplan.evaluation.workers import evaluate_run
    from trajplan.runs.policy import load_bc

    cli("bc", "--dataset", hopper_dataset, "--out", tmp_path / "bc", "--steps", "50",
        "--seed", "0", "--no-progress")  # fmt: skip
    actor = load_bc(tmp_path / "bc").actor
    obs = np.random.default_rng(0).standard_normal((9, actor.obs_dim)) * 3
    alone = np.stack([actor.act(o) for o in obs])
    assert all(np.array_equal(actor.act(obs[:b]), alone[:b]) for b in range(1, 10))
    returns = [
        [e.ret for e in evaluate_run(tmp_path / "bc", seeds=range(5), workers=w,
                                     episode_steps=60, progress=False, device="cpu").episodes]
        for w in (1, 2)
    ]  # fmt: skip
    assert returns[0] == returns[1]


def test_demo_again_keeps_the_last_demo(tmp_path: Path) -> None:
    """`make demo` a second time moves the last runs and scores aside, and says where."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "demo", Path(__file__).parents[1] / "scripts" / "demo.py"
    )
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.keep_previous(tmp_path) is None  # a first demo: nothing to keep
    for name in ("runs/tt/config.json", "eval/TT/eval.json", "datasets/d.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    kept = demo.keep_previous(tmp_path)
    assert kept is not None and kept.name.startswith("previous-")
    assert (kept / "runs/tt/config.json").read_text() == "runs/tt/config.json"
    assert (kept / "eval/TT/eval.json").is_file() and (tmp_path / "datasets/d.txt").is_file()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "eval").exists()


@pytest.fixture(scope="module")
def iql_run(minari_datasets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`trajplan iql` on the HalfCheetah fixture (the tiny TT run's data), 30 updates with a
    snapshot every 10: RUN/snapshots/step_10, step_20 (each config records snapshot_of)."""
    out = tmp_path_factory.mktemp("iql") / "iql"
    cli("iql", "--dataset", minari_datasets.halfcheetah, "--out", out, "--steps", "30",
        "--hidden", "16", "--batch-size", "32", "--snapshot-every", "10", "--no-progress",
        "--threads", "1")  # fmt: skip
    assert len(list((out / "snapshots").glob("step_*"))) >= 2
    return out


def test_what_changed_the_policy_is_in_its_label_and_group(
    tiny_run: Path, iql_run: Path, tmp_path: Path
) -> None:
    """A TT + Q eval of a TT run was labelled "TT" and pushed the plain TT eval out with a
    reason naming no winner: each policy (critic, prior, objective, horizon) is its own
    group with its own label, and a left-out eval names the one kept instead and why."""
    out = tmp_path / "evals"
    small = ("--episodes", "1", "--episode-steps", "3", "--threads", "1", "--no-progress",
             "--out", out)  # fmt: skip
    cli("eval", tiny_run, *small, "--horizon", "2", "--beam-width", "2")
    cli("eval", tiny_run, *small, "--horizon", "2", "--beam-width", "4")  # newer: kept
    cli("eval", tiny_run, *small, "--horizon", "2", "--beam-width", "4", "--critic", iql_run)
    cli("eval", tiny_run, *small, "--horizon", "2", "--beam-width", "4", "--prior", iql_run,
        "--objective", "likelihood")  # fmt: skip
    cli("eval", iql_run, *small)
    agg = tmp_path / "agg.json"
    text = cli("aggregate", out, "--json", agg).stdout
    doc = json.loads(agg.read_text())
    ds = "test/halfcheetah/random-v0"
    assert [g["label"] for g in doc["groups"]] == [  # in the order the folders sort
        f"IQL {ds}",
        f"TT h2 {ds}",
        f"TT + Q(iql) h2 {ds}",
        f"TT h2 prior(iql) likelihood {ds}",
    ]
    assert all(g["n_runs"] == 1 for g in doc["groups"])
    (gone,) = doc["selection"]["left_out"]  # the older beam width of the plain TT
    (kept,) = [g for g in doc["groups"] if g["label"] == f"TT h2 {ds}"][0]["runs"]
    assert "-h2-b2-" in gone["path"] and gone["reason"] == (
        f"other settings: plan.beam_width 2 (kept: 4); kept {kept['path']} instead "
        "(as many runs share either settings: the newest eval's win)"
    )
    assert "TT + Q(iql) h2" in text
    svg = tmp_path / "scores.svg"
    cli("plot", "--scores", out, "--out", svg)
    drawn = svg.read_text()
    for label in ("tiny: TT h2", "tiny: TT + Q(iql) h2", "iql: IQL"):
        assert label in drawn, label


def test_the_snapshots_of_one_run_count_as_that_run(iql_run: Path, tmp_path: Path) -> None:
    """`aggregate` counted each snapshot of one IQL run (its config records snapshot_of) as a
    run of its own: they are that run, which counts once, with its latest step's eval."""
    snaps = sorted((iql_run / "snapshots").glob("step_*"))
    runs = [iql_run, *snaps]
    out = tmp_path / "evals"
    cli("eval", *runs, "--episodes", "1", "--episode-steps", "3", "--no-progress", "--out", out)
    agg = tmp_path / "agg.json"
    cli("aggregate", out, "--json", agg)
    doc = json.loads(agg.read_text())
    (group,) = doc["groups"]
    assert group["n_runs"] == 1 and group["n_episodes"] == 1
    (kept,) = group["runs"]
    assert json.loads(Path(kept["path"]).read_text())["checkpoint"] == str(iql_run)
    reasons = [x["reason"] for x in doc["selection"]["left_out"]]
    assert len(reasons) == len(snaps)
    for snap, reason in zip(
        snaps, sorted(reasons, key=lambda r: int(r.split()[3][:-1])), strict=True
    ):
        step = int(snap.name.removeprefix("step_"))
        assert reason == (
            f"a snapshot (step {step}) of the run {iql_run.resolve()}: a run counts once, with "
            f"the eval of its latest weights (step 30: {kept['path']})"
        )
    # the snapshots alone: the latest of them speaks for the run
    alone = cli("aggregate", *[next(out.glob(f"{s.name}-*")) for s in snaps], "--json", agg)
    (group,) = json.loads(agg.read_text())["groups"]
    assert group["n_runs"] == 1 and snaps[-1].name in group["runs"][0]["path"], alone.stdout
    # the curve: each snapshot in a group of its own (docs/usage.md)
    labelled = [f"{s.name}={next(out.glob(f'{s.name}-*'))}" for s in snaps]
    cli("aggregate", *labelled, "--json", agg)
    curve = json.loads(agg.read_text())["groups"]
    assert [g["label"] for g in curve] == [s.name for s in snaps]
    assert all(g["n_runs"] == 1 for g in curve)
