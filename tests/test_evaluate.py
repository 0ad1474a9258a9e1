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
from conftest import cli, one_line_error, tiny_model

from trajplan.config import PlanConfig, RunConfig
from trajplan.data.tokens import Discretizer
from trajplan.envs.references import references_for
from trajplan.envs.video import prepare_rendering
from trajplan.errors import TrajplanError
from trajplan.evaluation.evalfiles import save_eval
from trajplan.evaluation.evaluate import (
    EvalResult,
    evaluate,
    resolve_run,
    run_episodes,
    with_overrides,
)
from trajplan.model.gpt import TrajectoryGPT
from trajplan.runs import check_env_matches, load_run

OBS, ACT, N = 11, 3, 20  # Hopper
D = OBS + ACT + 2
PLAN = PlanConfig(horizon=2, beam_width=3, n_expand=2, max_context_transitions=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def hopper_discretizer() -> Discretizer:
    """Bins fitted on random-action Hopper transitions, so observations spread over them."""
    from trajplan.envs.registry import make_env

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
    model = tiny_model(0, obs_dim=OBS, act_dim=ACT, vocab_size=N, transitions=4, n_layer=1,
                       n_embd=32, noise=0.3)  # fmt: skip
    return model.double(), hopper_discretizer()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, hopper) -> Path:
    """A finished run directory (trajplan.runs.checkpoint format) holding the Hopper model."""
    from trajplan.runs.checkpoint import save_checkpoint

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
    from trajplan.evaluation.plot import loss_curves

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
    from trajplan.envs.rollout import EpisodeResult

    res = EvalResult("hopper", "Hopper-v5", [EpisodeResult(0, 1.0, 1, None, False)],
                     references_for("hopper"), {}, 1.0, 1)  # fmt: skip
    assert res.summary()["return_stderr"] is None and res.summary()["comparable"] is True


# -- bad input -------------------------------------------------------------------------------


def test_wrong_env_and_bad_options_are_clear_errors(hopper, run_dir: Path) -> None:
    model, _ = hopper
    with pytest.raises(TrajplanError, match="trained on hopper, not halfcheetah"):
        check_env_matches(model.cfg.obs_dim, model.cfg.act_dim, "halfcheetah", "hopper")
    with pytest.raises(TrajplanError, match="obs/act dims 11/3, but HalfCheetah-v5 has 17/6"):
        check_env_matches(model.cfg.obs_dim, model.cfg.act_dim, "HalfCheetah-v5", None)
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
    cfg = with_overrides(PLAN, ["plan.prior_noise=0.5", " plan.horizon=4"], horizon=7)
    assert cfg.prior_noise == 0.5 and cfg.horizon == 4 and cfg.beam_width == PLAN.beam_width
    assert PLAN.prior_noise == 0.1 and PLAN.horizon == 2  # the given config is not touched
    assert with_overrides(PLAN, ["plan.k_act=null"]).k_act is None
    with pytest.raises(TrajplanError, match="beam_width must be at least 1"):
        with_overrides(PLAN, ["plan.beam_width=0"])


def test_video_without_imageio_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imageio", None)  # import fails as if not installed
    with pytest.raises(TrajplanError, match=r"pip install 'trajplan\[video\]'"):
        prepare_rendering()


def test_run_episodes_uses_the_checkpoint_plan_and_references(run_dir: Path) -> None:
    ckpt = load_run(run_dir, device="cpu")
    assert ckpt.kind == "tt" and ckpt.plan == PLAN
    result = run_episodes(ckpt, n_episodes=1, seed=3, episode_steps=3, progress=False)
    assert result.plan["horizon"] == PLAN.horizon and result.refs.source == "dataset metadata"
    assert result.checkpoint == str(run_dir) and result.dataset_id == "test/hopper/random-v0"
    with pytest.raises(TrajplanError, match="trained on hopper"):
        run_episodes(ckpt, env="walker2d", n_episodes=1, progress=False)


# -- command line ----------------------------------------------------------------------------


def test_cli_plan_and_eval_end_to_end(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rollout.json"
    args = ("plan", "--env", "hopper", "--runs", str(run_dir.parent), "--seed", "4", "--threads",
            "1", "--max-steps", "6", "--beam-width", "2", "--out", str(out))  # fmt: skip
    cli(*args)
    doc = json.loads(out.read_text())
    assert doc["plan"]["beam_width"] == 2 and doc["plan"]["horizon"] == PLAN.horizon
    (ep,) = doc["episodes"]
    assert ep["seed"] == 4 and 1 <= ep["length"] <= 6 and "not comparable" in doc["note"]
    cli(*args)
    assert json.loads(out.read_text())["episodes"][0]["rewards"] == ep["rewards"]  # same seed
    ev = cli("eval", str(run_dir), "--episodes", "2", "--episode-steps", "4",
             "--out", str(tmp_path / "ev"), "--mode", "full")  # fmt: skip
    (folder,) = (tmp_path / "ev").iterdir()  # one folder that says what was evaluated
    assert folder.name.startswith(f"{run_dir.name}-2ep-seed0-h{PLAN.horizon}-b")
    assert "-capped4-" in folder.name
    summary = json.loads((folder / "eval.json").read_text())["summary"]
    assert summary["episodes"] == 2 and summary["ref_source"] == "dataset metadata"
    assert "hopper-tiny" in ev.stdout and "dataset metadata" in ev.stdout
    assert (folder / "eval.png").is_file()


def test_cli_plan_set_reaches_the_planner(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rollout.json"
    cli("plan", "--checkpoint", str(run_dir), "--threads", "1", "--max-steps", "2",
        "--beam-width", "2", "--set", "plan.cdf_act=0.5", "--set", "plan.n_expand=3",
        "--out", str(out))  # fmt: skip
    plan = json.loads(out.read_text())["plan"]
    assert plan["cdf_act"] == 0.5 and plan["n_expand"] == 3 and plan["beam_width"] == 2


def test_cli_eval_with_a_prior_policy(run_dir: Path, tmp_path: Path) -> None:
    """--prior: the bundled Hopper actor proposes the candidates; eval.json says which prior
    and how many executed actions were its, and the folder name says a prior was used."""
    from trajplan.model.actor import builtin_actor

    actor = builtin_actor("hopper", "medium")
    cli("eval", str(run_dir), "--episodes", "2", "--episode-steps", "5", "--threads", "1",
        "--prior", str(actor), "--out", str(tmp_path / "ev"))  # fmt: skip
    (folder,) = (tmp_path / "ev").iterdir()
    assert "-prior-capped5-" in folder.name
    doc = json.loads((folder / "eval.json").read_text())
    assert doc["plan"]["prior"] == str(actor.resolve()) and doc["plan"]["prior_share"] == 1.0
    steps = [e["prior_steps"] for e in doc["episodes"]]
    lengths = [e["length"] for e in doc["episodes"]]
    assert all(0 <= s <= n for s, n in zip(steps, lengths, strict=True))
    diagnostics = doc["summary"]["diagnostics"]
    assert diagnostics["prior_action_share"] == pytest.approx(sum(steps) / sum(lengths))
    assert "prior_hold_share" not in diagnostics and "prior_margin" not in doc["plan"]


@pytest.mark.parametrize("command", [[], ["plan"], ["eval"], ["train"], ["data", "list"], ["hub"]])
def test_cli_short_help_and_version(command: list[str]) -> None:
    from trajplan import __version__

    assert "Usage:" in cli(*command, "-h").stdout
    assert cli("--version").stdout.strip() == __version__


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
        (("plan", "--checkpoint", "{run}", "--set", "plan.prior_noise"), "plan.KEY=VALUE"),
        (("plan", "--checkpoint", "{run}", "--set", "plan.prior_noise=-1"), "prior_noise must"),
        (("eval", "{run}", "--set", "plan.logp_weight=1"), "unknown key 'logp_weight'"),
        (("eval", "{run}", "--set", "plan.horizon=two"), "expected an integer"),
        (("eval", "{run}", "--prior", "no/such/bc"), "bc not found (give a BC run"),
        (("eval", "{run}", "--set", "plan.prior_share=2"), "prior_share must be in (0, 1]"),
        (("eval", "{run}", "--set", "plan.prior_margin=1"), "unknown key 'prior_margin'"),
        (("eval", "{run}", "--action-noise", "0.1"), "--action-noise is for policy runs"),
    ],
)
def test_cli_bad_input_is_one_red_line(run_dir: Path, args: tuple, message: str) -> None:
    argv = [a.format(root=run_dir.parent, run=run_dir) for a in args]
    one_line_error(cli(*argv, code=2), message)


def test_rendering_without_a_gl_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from trajplan.envs.video import check_rendering

    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
    with pytest.raises(TrajplanError, match="cannot render headless with MUJOCO_GL=no-such"):
        check_rendering("hopper")


@pytest.mark.slow
def test_diag_ranking_end_to_end(run_dir: Path, hopper_dataset: str, tmp_path: Path) -> None:
    """scripts/diag_ranking.py on a real run and a real prior in the real simulator: a table,
    then one JSON line. Its states are every 40th of the prior's own noise-free episode
    (whose length a plain rollout gives); the lookahead changes the model's score only, so
    the candidates, their true returns and first rewards (and their figures) are the same under
    either; with the model's candidates there is no noise-free one; bad input is one line.
    With --critic (an IQL run) the scores are TT + Q's: the planner's with the critic as its
    scorer, so at horizon 1 Q(s, candidate) itself (form q) or V(s) for every candidate
    (form v: all tie, no correlation); the true returns are unchanged, the correlations
    finite or null. (The scoring itself: test_plan.py, test_ranking_diagnostic_scores_...)"""
    import dataclasses
    import importlib.util

    import torch

    from trajplan.baselines.iql import IQLConfig, train_iql
    from trajplan.envs.registry import make_env, obs_view, resolve_env
    from trajplan.model.actor import builtin_actor
    from trajplan.planner.prior import load_prior
    from trajplan.planner.scorers import CriticScorer
    from trajplan.runs import load_critic
    from trajplan.runs.checkpoint import load_checkpoint

    script = str(Path(__file__).parents[1] / "scripts" / "diag_ranking.py")
    actor = str(builtin_actor("hopper", "medium"))
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")
    args = [sys.executable, script, "--run", str(run_dir), "--prior", actor, "--episodes", "1",
            "--every", "40", "--steps", "20", "--candidates", "4"]  # fmt: skip

    def figures_of(*extra: str) -> tuple[dict, str]:
        r = subprocess.run([*args, *extra], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout.strip().splitlines()[-1]), r.stdout

    prior, info, sim = load_prior(actor), resolve_env("hopper"), make_env("hopper")
    obs, _ = sim.reset(seed=0)  # the script's first episode seed
    length, done = 0, False
    while not done:
        obs, _, term, trunc, _ = sim.step(prior.act(obs_view(info, obs)[None])[0])
        length, done = length + 1, term or trunc
    sim.close()

    figures, stdout = figures_of()
    assert "rank correlation (model vs true)" in stdout and figures["source"] == "prior"
    assert figures["states"] == -(-length // 40)  # t = 0, 40, ... < length
    assert figures["scorer"] == "value" and figures["critic"] is None
    searched, _ = figures_of("--lookahead", "search")
    assert searched["lookahead"] == "search"
    same = ("states", "best_gain_return", "prior_gain_return", "reward_rank_corr",
            "candidates_edge_share")  # fmt: skip
    assert 0 <= figures["pick_edge_share"] <= 1 and 0 <= figures["candidates_edge_share"] <= 1
    assert {k: searched[k] for k in same} == {k: figures[k] for k in same}
    drawn, _ = figures_of("--source", "model", "--lookahead", "search")  # the reference's
    assert drawn["source"] == "model" and drawn["prior_gain_return"] is None
    assert drawn["states"] == figures["states"]
    bad = subprocess.run([*args[:-1], "1"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--candidates must be at least 2" in bad.stderr
    assert bad.stderr.strip().count("\n") == 0

    # TT + Q: an IQL critic trained on the run's dataset scores the candidates
    iql = train_iql(hopper_dataset, tmp_path / "iql", progress=False,
                    cfg=IQLConfig(steps=30, batch_size=32, hidden=[16], log_every=30))  # fmt: skip
    run_horizon = figures["horizon"]
    for extra in ((), ("--lookahead", "search"), ("--horizon", "1")):
        ttq, stdout = figures_of("--critic", str(iql), *extra)
        assert "rank correlation (TT + Q vs true)" in stdout and "TT + Q (critic" in stdout
        assert ttq["scorer"] == "critic" and ttq["critic"] == str(iql)
        assert ttq["horizon"] == (1 if "--horizon" in extra else run_horizon)
        assert {k: ttq[k] for k in same} == {k: figures[k] for k in same}  # the same truth
        assert 0 <= ttq["ranked_states"] <= ttq["states"]
        if ttq["ranked_states"]:
            assert isinstance(ttq["rank_corr"], float) and -1 <= ttq["rank_corr"] <= 1
        else:
            assert ttq["rank_corr"] is None and ttq["rank_corr_stderr"] is None
        assert isinstance(ttq["pick_gain_return"], float)
        assert ttq["pick_gain_return"] <= ttq["best_gain_return"] + 1e-3  # both rounded
    bad = subprocess.run([*args, "--critic", str(run_dir)], capture_output=True, text=True,
                         env=env)  # fmt: skip
    assert bad.returncode == 2 and "is not an IQL run" in bad.stderr
    assert bad.stderr.strip().count("\n") == 0
    bad = subprocess.run([*args, "--horizon", "0"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--horizon must be at least 1" in bad.stderr

    # what those scores are: at horizon 1, the critic's value of the real state (and action)
    spec = importlib.util.spec_from_file_location("diag_ranking", script)
    diag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diag)
    ckpt = load_checkpoint(run_dir, device="cpu")
    cfg = dataclasses.replace(ckpt.config.plan, horizon=1)
    disc, critic = ckpt.discretizer, load_critic(iql, "hopper")
    sim = make_env("hopper")
    seen = obs_view(info, sim.reset(seed=0)[0])  # the first state the script scores
    sim.close()
    context = torch.as_tensor(disc.discretize(seen[None], dims=slice(0, OBS)))  # [1, o]
    cand = torch.randint(0, N, (5, ACT), generator=torch.Generator().manual_seed(0))
    acts = torch.as_tensor(disc.reconstruct(cand.numpy(), dims=slice(OBS, OBS + ACT)))
    seen_k = torch.as_tensor(np.repeat(seen[None], 5, axis=0))
    scorer = CriticScorer(critic, cfg.discount)
    score, _ = diag.model_scores(ckpt, prior, cfg, context, seen, cand, scorer)
    want = critic.q(seen_k, acts)  # at horizon 1: Q of each candidate itself
    np.testing.assert_allclose(score, want.double().numpy(), rtol=1e-6, atol=1e-6)
