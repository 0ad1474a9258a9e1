"""Evaluation by planning in real MuJoCo envs: episodes, scores, files, CLI, bad input."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trajplan.config import ModelConfig, PlanConfig, RunConfig
from trajplan.errors import TrajplanError
from trajplan.evaluate import (
    EvalResult,
    check_env_matches,
    evaluate,
    resolve_run,
    run_episodes,
    with_overrides,
)
from trajplan.model import TrajectoryGPT
from trajplan.report import save_eval
from trajplan.scores import references_for
from trajplan.tokens import Discretizer
from trajplan.video import prepare_rendering

OBS, ACT, N = 11, 3, 20  # Hopper
D = OBS + ACT + 2
PLAN = PlanConfig(horizon=2, beam_width=3, n_expand=2, max_context_transitions=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def hopper_model(seed: int = 0) -> TrajectoryGPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        n_layer=1, n_head=2, n_embd=32, dropout=0.0, obs_dim=OBS, act_dim=ACT, vocab_size=N,
        block_size=4 * D - 1,
    )  # fmt: skip
    model = TrajectoryGPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.double().eval()


def hopper_discretizer() -> Discretizer:
    """Bins fitted on random-action Hopper transitions, so observations spread over them."""
    from trajplan.envs import make_env

    env = make_env("hopper")
    rows = []
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(300):
        act = env.action_space.sample()
        nxt, rew, term, trunc, _ = env.step(act)
        rows.append(np.concatenate([obs, act, [rew, 10 * rew]]))
        obs = nxt if not (term or trunc) else env.reset()[0]
    env.close()
    return Discretizer.fit(np.array(rows), N)


@pytest.fixture(scope="module")
def hopper() -> tuple[TrajectoryGPT, Discretizer]:
    return hopper_model(), hopper_discretizer()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, hopper) -> Path:
    """A finished run directory (trajplan.checkpoint format) holding the Hopper model."""
    save_checkpoint = pytest.importorskip("trajplan.checkpoint").save_checkpoint

    model, disc = hopper
    root = tmp_path_factory.mktemp("runs")
    cfg = RunConfig(env="hopper", dataset="test/hopper/random-v0", model=model.cfg, plan=PLAN)
    manifest = {
        "env": "hopper",
        "dataset_id": "test/hopper/random-v0",
        "ref_min": -20.0,
        "ref_max": 3000.0,
        "ref_source": "dataset metadata",
        "status": "finished",
        "finished": "2026-01-01T00:00:00+00:00",
        "step": 1,
    }
    path = root / "hopper-tiny"
    save_checkpoint(path, copy.deepcopy(model).float(), cfg, manifest, disc)
    return path


# -- episodes --------------------------------------------------------------------------------


def test_episodes_batched_equal_alone_and_same_seed_same_returns(hopper) -> None:
    model, disc = hopper
    together = evaluate(model, disc, "hopper", PLAN, 3, seed=5, episode_steps=25, device="cpu",
                        progress=False)  # fmt: skip
    assert [e.seed for e in together.episodes] == [5, 6, 7]
    for ep in together.episodes:
        alone = evaluate(model, disc, "hopper", PLAN, 1, seed=ep.seed, episode_steps=25,
                         device="cpu", progress=False)  # fmt: skip
        assert alone.episodes[0].rewards == ep.rewards  # same actions, step after step
    again = evaluate(model, disc, "hopper", PLAN, 3, seed=5, episode_steps=25, device="cpu",
                     progress=False)  # fmt: skip
    assert np.array_equal(again.returns, together.returns)
    listed = evaluate(model, disc, "hopper", PLAN, seeds=[7, 5], episode_steps=25,
                      device="cpu", progress=False)  # fmt: skip
    assert [e.seed for e in listed.episodes] == [7, 5]
    assert listed.episodes[0].rewards == together.episodes[2].rewards
    assert len({e.ret for e in together.episodes}) == 3  # seeds differ, episodes differ
    for ep in together.episodes:
        assert ep.length == len(ep.rewards) <= 25
        assert ep.terminated or ep.length == 25  # a hopper that falls ends early
        assert ep.ret == pytest.approx(sum(ep.rewards))
    assert together.env_steps == sum(e.length for e in together.episodes)


def test_summary_scores_references_and_files(hopper, tmp_path: Path) -> None:
    model, disc = hopper
    refs = references_for("hopper", -20.0, 3000.0)
    result = evaluate(model, disc, "hopper", PLAN, 2, seed=0, episode_steps=5, device="cpu",
                      refs=refs, progress=True)  # fmt: skip
    s = result.summary()
    rets = result.returns
    assert s["return_mean"] == pytest.approx(rets.mean())
    assert s["return_stderr"] == pytest.approx(rets.std(ddof=1) / np.sqrt(2))
    scores = 100 * (rets + 20.0) / 3020.0
    assert s["score_mean"] == pytest.approx(scores.mean())
    assert s["ref_source"] == "dataset metadata" and s["comparable"] is False
    assert s["reference"] == "dataset metadata (-20.00 .. 3000.00)"
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"kind": "train", "step": i, "loss": 3.0 / (i + 1)} for i in range(5)]
    lines.append({"kind": "epoch", "step": 4, "loss": 1.5})
    metrics.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    from trajplan.plot import loss_curves

    curves = loss_curves(metrics)
    assert curves["train loss"] == ([0.0, 1.0, 2.0, 3.0, 4.0], [3.0, 1.5, 1.0, 0.75, 0.6])
    assert curves["epoch loss"] == ([4.0], [1.5])
    path = save_eval(result, tmp_path / "out", metrics)
    doc = json.loads(path.read_text())
    assert doc["summary"]["episodes"] == 2 and len(doc["episodes"]) == 2
    assert "not comparable" in doc["note"] and doc["plan"]["horizon"] == 2
    assert (tmp_path / "out" / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob(".*tmp"))  # nothing half-written left


def test_reference_scores_are_named() -> None:
    d4rl = references_for("hopper")
    assert (d4rl.ref_min, d4rl.ref_max, d4rl.source) == (-20.272305, 3234.3, "D4RL constants")
    assert d4rl.score(3234.3) == pytest.approx(100.0)
    data = references_for("halfcheetah", -1.0, 1.0, "dataset metadata")
    assert data.source == "dataset metadata" and data.score(0.0) == pytest.approx(50.0)
    none = references_for("InvertedPendulum-v5")
    assert none.source == "none" and none.score(1.0) is None


def test_one_episode_stderr_is_none() -> None:
    from trajplan.rollout import EpisodeResult

    res = EvalResult("hopper", "Hopper-v5", [EpisodeResult(0, 1.0, 1, None, False)],
                     references_for("hopper"), {}, 1.0, 1)  # fmt: skip
    assert res.summary()["return_stderr"] is None and res.summary()["comparable"] is True


# -- bad input -------------------------------------------------------------------------------


def test_wrong_env_and_bad_options_are_clear_errors(hopper, run_dir: Path) -> None:
    model, _ = hopper
    with pytest.raises(TrajplanError, match="trained on hopper, not halfcheetah"):
        check_env_matches(model, "halfcheetah", "hopper")
    with pytest.raises(TrajplanError, match="obs/act dims 11/3, but HalfCheetah-v5 has 17/6"):
        check_env_matches(model, "HalfCheetah-v5", None)
    with pytest.raises(TrajplanError, match="beam_width must be at least 1"):
        with_overrides(PLAN, beam_width=0)
    assert with_overrides(PLAN, horizon=7, k_act=None).horizon == 7
    with pytest.raises(TrajplanError, match="checkpoint not found"):
        resolve_run(run_dir / "missing", None, run_dir.parent)
    with pytest.raises(TrajplanError, match="give --checkpoint DIR or --env NAME"):
        resolve_run(None, None, run_dir.parent)
    with pytest.raises(TrajplanError, match="no finished run for walker2d"):
        resolve_run(None, "walker2d", run_dir.parent)
    assert resolve_run(None, "Hopper-v5", run_dir.parent) == run_dir
    model_, disc = hopper
    with pytest.raises(TrajplanError, match="--episodes must be at least 1"):
        evaluate(model_, disc, "hopper", PLAN, 0, progress=False)


def test_set_overrides_any_plan_field_after_the_flags() -> None:
    cfg = with_overrides(PLAN, ["plan.logp_weight=0.5", " plan.horizon=4"], horizon=7)
    assert cfg.logp_weight == 0.5 and cfg.horizon == 4 and cfg.beam_width == PLAN.beam_width
    assert PLAN.logp_weight == 0.0 and PLAN.horizon == 2  # the given config is not touched
    assert with_overrides(PLAN, ["plan.k_act=null"]).k_act is None
    with pytest.raises(TrajplanError, match="beam_width must be at least 1"):
        with_overrides(PLAN, ["plan.beam_width=0"])


def test_video_without_imageio_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imageio", None)  # import fails as if not installed
    with pytest.raises(TrajplanError, match=r"pip install 'trajplan\[video\]'"):
        prepare_rendering()


def test_run_episodes_uses_the_checkpoint_plan_and_references(run_dir: Path) -> None:
    from trajplan.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir, device="cpu")
    result = run_episodes(ckpt, n_episodes=1, seed=3, episode_steps=3, progress=False)
    assert result.plan["horizon"] == PLAN.horizon and result.refs.source == "dataset metadata"
    assert result.checkpoint == str(run_dir) and result.dataset_id == "test/hopper/random-v0"
    with pytest.raises(TrajplanError, match="trained on hopper"):
        run_episodes(ckpt, env="walker2d", n_episodes=1, progress=False)


# -- command line ----------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "trajplan", *args], capture_output=True, text=True, env=env
    )


def test_cli_plan_and_eval_end_to_end(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rollout.json"
    args = ("plan", "--env", "hopper", "--runs", str(run_dir.parent), "--seed", "4", "--threads",
            "1", "--max-steps", "6", "--beam-width", "2", "--out", str(out))  # fmt: skip
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    doc = json.loads(out.read_text())
    assert doc["plan"]["beam_width"] == 2 and doc["plan"]["horizon"] == PLAN.horizon
    (ep,) = doc["episodes"]
    assert ep["seed"] == 4 and 1 <= ep["length"] <= 6 and "not comparable" in doc["note"]
    assert run_cli(*args).returncode == 0
    assert json.loads(out.read_text())["episodes"][0]["rewards"] == ep["rewards"]  # same seed
    ev = run_cli("eval", str(run_dir), "--episodes", "2", "--episode-steps", "4",
                 "--out", str(tmp_path / "ev"), "--mode", "full")  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    (folder,) = (tmp_path / "ev").iterdir()  # one folder that says what was evaluated
    assert folder.name.startswith(f"{run_dir.name}-2ep-seed0-h{PLAN.horizon}-b")
    assert "-capped4-" in folder.name
    summary = json.loads((folder / "eval.json").read_text())["summary"]
    assert summary["episodes"] == 2 and summary["ref_source"] == "dataset metadata"
    assert "hopper-tiny" in ev.stdout and "dataset metadata" in ev.stdout
    assert (folder / "eval.png").is_file()


def test_cli_plan_set_reaches_the_planner(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rollout.json"
    res = run_cli("plan", "--checkpoint", str(run_dir), "--threads", "1", "--max-steps", "2",
                  "--beam-width", "2", "--set", "plan.logp_weight=0.5", "--set",
                  "plan.n_expand=3", "--out", str(out))  # fmt: skip
    assert res.returncode == 0, res.stderr
    plan = json.loads(out.read_text())["plan"]
    assert plan["logp_weight"] == 0.5 and plan["n_expand"] == 3 and plan["beam_width"] == 2


def test_cli_eval_with_a_prior_policy(run_dir: Path, tmp_path: Path) -> None:
    """--prior: the bundled Hopper actor proposes the candidates, with a margin for leaving
    its own action; eval.json says which prior, how many executed actions were its and how
    often the margin kept its plan, and the folder name says a prior was used."""
    from trajplan.actors import builtin_actor

    actor = builtin_actor("hopper", "medium")
    ev = run_cli("eval", str(run_dir), "--episodes", "2", "--episode-steps", "5", "--threads",
                 "1", "--prior", str(actor), "--set", "plan.prior_margin=0.5",
                 "--out", str(tmp_path / "ev"))  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    (folder,) = (tmp_path / "ev").iterdir()
    assert "-prior-capped5-" in folder.name
    doc = json.loads((folder / "eval.json").read_text())
    assert doc["plan"]["prior"] == str(actor.resolve()) and doc["plan"]["prior_share"] == 1.0
    steps = [e["prior_steps"] for e in doc["episodes"]]
    lengths = [e["length"] for e in doc["episodes"]]
    assert all(0 <= s <= n for s, n in zip(steps, lengths, strict=True))
    holds = [e["prior_holds"] for e in doc["episodes"]]
    assert all(0 <= h <= s for h, s in zip(holds, steps, strict=True))
    diagnostics = doc["summary"]["diagnostics"]
    assert diagnostics["prior_action_share"] == pytest.approx(sum(steps) / sum(lengths))
    assert diagnostics["prior_hold_share"] == pytest.approx(sum(holds) / sum(lengths))
    assert doc["plan"]["prior_margin"] == 0.5


@pytest.mark.parametrize("command", [[], ["plan"], ["eval"], ["train"], ["data", "list"], ["hub"]])
def test_cli_short_help_and_version(command: list[str], capsys: pytest.CaptureFixture) -> None:
    from trajplan import __version__
    from trajplan.cli import main

    with pytest.raises(SystemExit) as code:
        main([*command, "-h"])
    assert code.value.code == 0
    assert "Usage:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as code:
        main(["--version"])
    assert code.value.code == 0 and capsys.readouterr().out.strip() == __version__


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("plan", "--checkpoint", "no/such/run"), "checkpoint not found"),
        (("plan", "--env", "walker2d", "--runs", "{root}"), "no finished run for walker2d"),
        (("plan", "--checkpoint", "{run}", "--beam-width", "0"), "beam_width must be at least 1"),
        (("plan", "--checkpoint", "{run}", "--env", "halfcheetah"), "trained on hopper"),
        (("eval", "{run}", "--mode", "fast"), "unknown plan mode"),
        (("eval", "{run}", "--episodes", "0"), "--episodes must be at least 1"),
        (("eval", "{run}", "--threads", "0"), "--threads must be at least 1"),
        (("plan", "--checkpoint", "{run}", "--window", "wide"), "unknown plan window"),
        (("eval", "{run}", "--set", "plan.nope=1"), "unknown key 'nope'"),
        (("eval", "{run}", "--set", "train.lr=1"), "plan and eval take plan.KEY=VALUE"),
        (("plan", "--checkpoint", "{run}", "--set", "plan.logp_weight"), "plan.KEY=VALUE"),
        (("plan", "--checkpoint", "{run}", "--set", "plan.logp_weight=-1"), "logp_weight must"),
        (("eval", "{run}", "--set", "plan.horizon=two"), "expected an integer"),
        (("eval", "{run}", "--prior", "no/such/bc"), "bc not found (give a BC run"),
        (("eval", "{run}", "--set", "plan.prior_share=2"), "prior_share must be in (0, 1]"),
        (("eval", "{run}", "--set", "plan.prior_margin=1"), "prior_margin needs a prior"),
        (("eval", "{run}", "--action-noise", "0.1"), "--action-noise is for BC runs"),
    ],
)
def test_cli_bad_input_is_one_red_line(
    run_dir: Path, args: tuple, message: str, capsys: pytest.CaptureFixture
) -> None:
    from trajplan.cli import main

    argv = [a.format(root=run_dir.parent, run=run_dir) for a in args]
    with pytest.raises(SystemExit) as code:
        main(argv)
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0 and "Traceback" not in err


def test_rendering_without_a_gl_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from trajplan.video import check_rendering

    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
    with pytest.raises(TrajplanError, match="cannot render headless with MUJOCO_GL=no-such"):
        check_rendering("hopper")


def test_ranking_diagnostic_end_to_end(run_dir: Path) -> None:
    """scripts/diag_ranking.py on a real run and a real prior in the real simulator: a table,
    then one JSON line whose gains are ordered as they must be (the best candidate's true
    return is at least the model's pick's and the noise-free one's); bad input is one line."""
    from trajplan.actors import builtin_actor

    script = str(Path(__file__).parents[1] / "scripts" / "diag_ranking.py")
    actor = str(builtin_actor("hopper", "medium"))
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")
    args = [sys.executable, script, "--run", str(run_dir), "--prior", actor, "--episodes", "1",
            "--every", "40", "--steps", "20", "--candidates", "4"]  # fmt: skip
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    assert figures["states"] >= 1 and -1.0 <= figures["rank_corr"] <= 1.0
    assert -1.0 <= figures["reward_rank_corr"] <= 1.0
    assert figures["best_gain_return"] >= max(figures["pick_gain_return"], 0.0)
    assert figures["best_gain_return"] >= figures["prior_gain_return"]
    assert "rank correlation" in r.stdout and figures["source"] == "prior"
    own = [*args, "--source", "model", "--lookahead", "search"]  # the reference's candidates
    drawn = subprocess.run(own, capture_output=True, text=True, env=env)  # and its search
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    figures = json.loads(drawn.stdout.strip().splitlines()[-1])
    assert figures["source"] == "model" and figures["prior_gain_return"] is None
    assert figures["lookahead"] == "search"
    assert figures["best_gain_return"] >= max(figures["pick_gain_return"], 0.0)
    bad = subprocess.run([*args[:-1], "1"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--candidates must be at least 2" in bad.stderr
    assert bad.stderr.strip().count("\n") == 0
