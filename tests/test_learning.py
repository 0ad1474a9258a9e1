"""Learning-quality tools: the BC baseline, mixed-quality datasets, return-weighted action
tokens, the validation split, loss by token kind, plan diagnostics and eval over workers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli, one_line_error, tiny_model

from trajplan.config import DataConfig
from trajplan.configs import load_config
from trajplan.errors import TrajplanError

ROOT = Path(__file__).parents[1]


# -- the BC baseline -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bc_run(minari_datasets, tmp_path_factory, one_thread) -> Path:
    from trajplan.baselines.bc import BCConfig, train_bc

    out = tmp_path_factory.mktemp("bc") / "bc"
    return train_bc(
        minari_datasets.halfcheetah, out, BCConfig(steps=300, log_every=100), progress=False
    )


def test_bc_trains_saves_loads_and_matches_its_torch_net(bc_run: Path, minari_datasets) -> None:
    from trajplan.baselines.bc import BCConfig, train_bc
    from trajplan.data.transitions import load_episodes
    from trajplan.runs.policy import is_bc_run, load_bc

    doc = json.loads((bc_run / "config.json").read_text())
    assert doc["format"] == "trajplan-bc/1" and doc["env"] == "halfcheetah"
    assert doc["ref_min"] == -300.0 and doc["n_val_transitions"] > 0
    lines = [json.loads(x) for x in (bc_run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [100, 200, 300]
    assert all(x["kind"] == "bc" and math.isfinite(x["val_loss"]) for x in lines)
    assert lines[-1]["loss"] < lines[0]["loss"]  # it learns
    run = load_bc(bc_run)
    assert is_bc_run(bc_run) and not is_bc_run(bc_run.parent)
    ep = load_episodes(minari_datasets.halfcheetah)
    act = run.actor.act(ep.observations[:5])
    assert act.shape == (5, 6) and np.all(np.abs(act) <= 1.0)
    # same seed, same policy (the normalisation folded into the first layer)
    again = train_bc(
        minari_datasets.halfcheetah,
        bc_run.parent / "again",
        BCConfig(steps=300, log_every=100),
        progress=False,
    )
    np.testing.assert_array_equal(load_bc(again).actor.act(ep.observations[:5]), act)


def test_return_weighted_bc_leans_to_the_better_episodes(tmp_path: Path, one_thread) -> None:
    """Two behaviours on the same states: good episodes act +0.5 (reward 1 per step), poor
    ones -0.5 (reward 0). Plain BC learns their mean, 0; weighted BC (beta 2) leans to +0.5."""
    from trajplan.baselines.bc import BCConfig, train_bc
    from trajplan.data.episodes import Episodes
    from trajplan.runs.policy import load_bc

    rng = np.random.default_rng(0)
    n_ep, length = 20, 50
    good = np.repeat(np.arange(n_ep) % 2 == 0, length)  # [n] episodes 0, 2, 4, ... are good
    obs = rng.normal(size=(n_ep * length, 11)).astype(np.float32)  # Hopper's dims
    act = np.where(good[:, None], 0.5, -0.5) * np.ones((1, 3), np.float32)
    ep = Episodes(
        observations=obs, actions=act.astype(np.float32), rewards=good.astype(np.float32),
        terminations=np.zeros(n_ep * length, bool),
        truncations=np.tile(np.arange(length) == length - 1, n_ep),
        starts=np.arange(n_ep) * length, lengths=np.full(n_ep, length), dataset_id="test/two",
        env_id="Hopper-v5",
    )  # fmt: skip
    mean_action = {}
    for beta in (0.0, 2.0):
        cfg = BCConfig(hidden=[32], steps=600, val_fraction=0.0, action_weighting=beta)
        run = train_bc("test/two", tmp_path / f"b{beta}", cfg, progress=False, episodes=ep)
        mean_action[beta] = float(load_bc(run).actor.act(obs[:200]).mean())
    assert abs(mean_action[0.0]) < 0.1
    assert mean_action[2.0] > 0.35
    with pytest.raises(TrajplanError, match="action_weighting must be >= 0"):
        BCConfig(action_weighting=-1.0).check()


def test_bc_export_folds_normalisation_exactly() -> None:
    from trajplan.baselines.bc import _mlp, export_actor

    torch.manual_seed(0)
    net = _mlp([3, 8, 2])
    mean, std = np.array([1.0, -2.0, 0.5]), np.array([2.0, 0.5, 1.5])
    ws, bs = export_actor(net, mean, std, -np.ones(2), np.ones(2))
    x = np.random.default_rng(0).normal(size=(4, 3))
    want = net(torch.as_tensor((x - mean) / std, dtype=torch.float32)).detach().numpy()
    got = np.maximum(x @ ws[0].T + bs[0], 0) @ ws[1].T + bs[1]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_bc_run_evaluates_like_a_tt_run_on_the_same_seeds(bc_run: Path, tmp_path: Path) -> None:
    from trajplan.envs.registry import make_env
    from trajplan.evaluation.evaluate import run_episodes
    from trajplan.runs.policy import load_bc

    result = run_episodes(load_bc(bc_run), seeds=[3, 4], episode_steps=20, progress=False)
    assert [e.seed for e in result.episodes] == [3, 4]
    assert result.plan == {"policy": "bc"} and "diagnostics" not in result.summary()
    # the same episode by hand: reset with the seed, act with the actor
    actor = load_bc(bc_run).actor
    env = make_env("halfcheetah", max_episode_steps=20)
    obs, _ = env.reset(seed=3)
    ret = 0.0
    for _ in range(20):
        obs, r, *_ = env.step(actor.act(obs))
        ret += r
    env.close()
    assert result.episodes[0].ret == pytest.approx(ret, rel=1e-4)  # float32 batch vs single
    assert result.summary()["score_mean"] is not None


def test_bc_and_eval_cli(minari_root: Path, tmp_path: Path, halfcheetah_dataset: str) -> None:
    out = tmp_path / "bc"
    cli("bc", "--dataset", halfcheetah_dataset, "--out", str(out), "--steps", "50",
        "--no-progress", "--threads", "1", process=True)  # fmt: skip
    cli("eval", str(out), "--episodes", "2", "--episode-steps", "5", "--out",
        str(tmp_path / "ev"), "--threads", "1", process=True)  # fmt: skip
    doc = json.loads(next((tmp_path / "ev").rglob("eval.json")).read_text())
    assert doc["summary"]["episodes"] == 2 and doc["plan"] == {"policy": "bc"}
    for bad, msg in (
        (["--out", str(out)], "already exists"),
        (["--out", str(tmp_path / "x"), "--hidden", "a,b"], "comma-separated"),
        (["--out", str(tmp_path / "y"), "--steps", "0"], "at least 1"),
    ):
        one_line_error(cli("bc", "--dataset", halfcheetah_dataset, *bad, process=True, code=2), msg)


# -- mixed-quality datasets ------------------------------------------------------------------


def test_mixed_policy_rates_noise_and_determinism() -> None:
    import gymnasium as gym

    from trajplan.behaviour.policies import MixedPolicy, parse_range

    space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)

    class Constant:
        name = "const"

        def reset(self, seed):
            pass

        def act(self, obs):
            return np.full(3, 0.25, np.float32)

        def observe(self, *a):
            pass

    plain = MixedPolicy(Constant(), space)
    plain.reset(1)
    assert np.array_equal(plain.act(None), np.full(3, 0.25, np.float32))
    always = MixedPolicy(Constant(), space, random_rate=(1.0, 1.0))
    always.reset(1)
    acts = np.stack([always.act(None) for _ in range(50)])
    assert not np.any(np.isclose(acts, 0.25)) and np.all(np.abs(acts) <= 1)
    mixed = MixedPolicy(Constant(), space, random_rate=(0.0, 1.0), noise=(0.0, 0.5))
    assert mixed.name == "const+random0-1+noise0-0.5"
    rates = []
    for seed in (5, 5, 6):
        mixed.reset(seed)
        rates.append((mixed.last_rate, mixed.last_noise, mixed.act(None).tolist()))
    assert rates[0] == rates[1] and rates[0] != rates[2]  # per episode, from the seed
    assert parse_range("0:0.5", "x") == (0.0, 0.5) and parse_range("0.3", "x") == (0.3, 0.3)
    for bad in ("a:b", "1:2:3", "nan"):
        with pytest.raises(TrajplanError, match="range"):
            parse_range(bad, "x")
    with pytest.raises(TrajplanError, match="random rate"):
        MixedPolicy(Constant(), space, random_rate=(0.5, 1.5))


def test_collect_mixed_dataset_records_how_it_was_made(minari_root: Path) -> None:
    import minari

    from trajplan.behaviour.collect import collect
    from trajplan.data.transitions import load_episodes

    collect("hopper", "medium", 300, "test/hopper/mixed-v0", seed=3, random_rate=(0.0, 1.0),
            force=True, progress=False)  # fmt: skip
    ds = minari.load_dataset("test/hopper/mixed-v0")
    assert "random actions at a rate drawn from U(0, 1)" in ds.storage.metadata["description"]
    assert ds.storage.metadata["algorithm_name"] == "td3-medium+random0-1"
    clean = "test/hopper/clean-v0"
    collect("hopper", "medium", 300, clean, seed=3, force=True, progress=False)
    a, b = load_episodes("test/hopper/mixed-v0"), load_episodes(clean)
    assert not np.array_equal(a.actions[:50], b.actions[:50])


# -- action weights, validation split, loss by kind ------------------------------------------


def test_action_weights_follow_return_to_go() -> None:
    from trajplan.data.weighting import action_weights

    tr = np.zeros((5, 4), np.float32)
    tr[:, -2] = [0, 1, 2, 3, 4]  # rewards; values 0: G = r
    w = action_weights(tr, 1.0, 0.99)
    assert w.mean() == pytest.approx(1.0) and np.all(np.diff(w) > 0)
    z = (tr[:, -2] - 2) / np.std(tr[:, -2])
    np.testing.assert_allclose(w, np.exp(z) / np.exp(z).mean(), rtol=1e-6)
    np.testing.assert_array_equal(action_weights(tr, 0.0, 0.99), np.ones(5))


def test_weighted_windows_scale_only_action_targets(minari_datasets) -> None:
    from trajplan.data.transitions import load_episodes, prepare_episodes
    from trajplan.data.weighting import action_weights

    ep = load_episodes(minari_datasets.halfcheetah)
    plain = prepare_episodes(ep, DataConfig(seq_len=3, n_bins=10))
    weighted = prepare_episodes(ep, DataConfig(seq_len=3, n_bins=10, action_weighting=1.0))
    idx = torch.arange(plain.windows.n_windows)
    x0, y0, m0 = plain.windows.get_batch(idx)
    x1, y1, m1 = weighted.windows.get_batch(idx)
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    D, o, a = 25, 17, 6
    target_dim = (torch.arange(x0.shape[1]) + 1) % D
    is_act = (target_dim >= o) & (target_dim < o + a)
    assert torch.equal(m0[:, ~is_act], m1[:, ~is_act])
    w = action_weights(plain.transitions, 1.0, 0.99)  # window 0 = steps 0..2 of episode 0
    for k in range(3):
        pos = k * D + o - 1  # input position whose target is step k's first action dim
        assert m1[0, pos].item() == pytest.approx(w[k] * m0[0, pos].item(), rel=1e-6)


def test_validation_split_holds_out_whole_episodes(minari_datasets) -> None:
    from trajplan.data.transitions import load_episodes, prepare_episodes, split_episodes

    ep = load_episodes(minari_datasets.hopper)
    train_ep, val_ep = split_episodes(ep, 0.25)
    assert (train_ep.n_episodes, val_ep.n_episodes) == (6, 2)
    assert train_ep.n_steps + val_ep.n_steps == ep.n_steps
    train_ep.validate(), val_ep.validate()
    again = split_episodes(ep, 0.25)[1]
    np.testing.assert_array_equal(again.rewards, val_ep.rewards)  # deterministic
    data = prepare_episodes(ep, DataConfig(seq_len=4, n_bins=10, val_fraction=0.25))
    assert data.val_windows.n_windows == int((val_ep.lengths - 1).sum())
    assert data.windows.n_windows == int((train_ep.lengths - 1).sum())
    with pytest.raises(TrajplanError, match="val_fraction"):
        prepare_episodes(ep, DataConfig(val_fraction=1.5))


def test_loss_by_kind_matches_a_hand_computation() -> None:
    model = tiny_model(obs_dim=2, act_dim=1, vocab_size=5, transitions=2, n_layer=1, n_head=1,
                       n_embd=8)  # fmt: skip
    torch.manual_seed(0)
    logits = torch.randn(2, 9, 6)
    y = torch.randint(0, 6, (2, 9))
    mask = torch.ones(2, 9)
    mask[1, 4:] = 0
    got = model.loss_by_kind(logits, y, mask)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 6), y.reshape(-1), reduction="none")
    ce = ce.view(2, 9)
    kinds = [[0, 0, 1, 2, 3][(t + 1) % 5] for t in range(9)]  # target of position t
    for k in range(4):
        sel = [(b, t) for b in range(2) for t in range(9) if kinds[t] == k and mask[b, t] > 0]
        want = sum(ce[b, t] for b, t in sel) / len(sel)
        assert got[k].item() == pytest.approx(want.item(), rel=1e-5)


def test_training_logs_validation_and_kind_losses_and_fits_its_schedule(
    minari_datasets,
    tmp_path: Path,
    one_thread,
) -> None:
    from trajplan.training.loop import train

    cfg = load_config("tiny")
    cfg.dataset = minari_datasets.hopper
    cfg.data.val_fraction = 0.25
    cfg.data.action_weighting = 1.0
    cfg.train.epochs, cfg.train.max_steps, cfg.train.log_every = 50, 7, 1
    cfg.train.fit_schedule, cfg.train.clamp_schedule = True, True
    run = train(cfg, tmp_path / "run", device="cpu", progress=False)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "train"]
    assert all({"loss_obs", "loss_act", "loss_rew", "loss_val"} <= set(r) for r in steps)
    vals = [r for r in rows if r["kind"] == "val"]
    assert vals and vals[-1]["step"] == 7  # the cut run still reports its validation loss
    assert all(math.isfinite(vals[-1][k]) for k in ("val_loss", "val_obs", "val_act"))
    # the schedule ended with the run: the last rate is the cosine's floor (0.1x)
    assert steps[-1]["lr"] == pytest.approx(0.1 * cfg.train.lr, rel=1e-6)


# -- plan diagnostics ------------------------------------------------------------------------


def test_realized_returns_and_diagnostics_by_hand() -> None:
    from trajplan.envs.rollout import EpisodeResult
    from trajplan.evaluation.scores import plan_diagnostics, realized_returns

    np.testing.assert_allclose(realized_returns([1.0, 2.0, 3.0], 0.5), [2.75, 3.5, 3.0])
    e = EpisodeResult(0, 6.0, 3, None, True, rewards=[1.0, 2.0, 3.0],
                      pred_rewards=[1.5, 2.0, 2.5], pred_returns=[3.0, 3.0, 3.0])  # fmt: skip
    d = plan_diagnostics([e], 0.5)
    assert d["reward_mae"] == pytest.approx(1 / 3)
    assert d["return_bias"] == pytest.approx(np.mean([3 - 2.75, 3 - 3.5, 0.0]))
    assert d["reward_corr"] == pytest.approx(1.0)


def test_tt_eval_records_predictions_next_to_the_env(tiny_run: Path, one_thread) -> None:
    from trajplan.evaluation.evaluate import run_episodes
    from trajplan.runs import load_run

    result = run_episodes(load_run(tiny_run, device="cpu"), seeds=[1], episode_steps=6,
                          progress=False)  # fmt: skip
    ep = result.episodes[0]
    assert len(ep.pred_rewards) == len(ep.pred_returns) == ep.length == 6
    diag = result.summary()["diagnostics"]
    assert diag["steps"] == 6 and diag["reward_env_mean"] == pytest.approx(ep.ret / 6)


# -- evaluation over worker processes --------------------------------------------------------


def test_worker_devices_spread_over_gpus() -> None:
    from trajplan.evaluation.workers import worker_devices

    assert worker_devices("auto", 3, 0) == ["cpu"] * 3
    assert worker_devices("cpu", 2, 4) == ["cpu", "cpu"]
    assert worker_devices("auto", 5, 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices("cuda", 2, 8) == ["cuda:0", "cuda:1"]
    assert worker_devices("cuda:3", 2, 8) == ["cuda:3", "cuda:3"]
    with pytest.raises(TrajplanError, match="CUDA is not available"):
        worker_devices("cuda", 2, 0)


def test_eval_over_workers_equals_one_process(tiny_run: Path) -> None:
    from trajplan.evaluation.workers import evaluate_run

    kw = dict(seeds=[4, 1, 7], episode_steps=4, device="cpu", progress=False)
    one = evaluate_run(tiny_run, workers=1, **kw)
    two = evaluate_run(tiny_run, workers=2, **kw)
    assert [e.seed for e in two.episodes] == [4, 1, 7]
    for a, b in zip(one.episodes, two.episodes, strict=True):
        assert (a.ret, a.rewards, a.pred_rewards) == (b.ret, b.rewards, b.pred_rewards)
    assert two.env_steps == one.env_steps == 12
    with pytest.raises(TrajplanError, match="distinct"):
        evaluate_run(tiny_run, seeds=[1, 1], workers=2)


@pytest.mark.slow
def test_demo_runs_end_to_end_at_toy_size(tmp_path: Path) -> None:
    """`make demo`'s script, shrunk: collect, BC, TT, eval on the same seeds, table + JSON."""
    cmd = [sys.executable, str(ROOT / "scripts" / "demo.py"), "--out", str(tmp_path),
           "--steps", "1200", "--epochs", "1", "--bc-steps", "50", "--episodes", "2",
           "--episode-steps", "5", "--config", "tiny"]  # fmt: skip
    r = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert r.returncode == 0, r.stderr[-2000:]
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"dataset_score", "bc_score", "wbc_score", "tt_score", "tt_score_stderr",
            "tt_prior_score"} <= set(figures)  # fmt: skip
    assert "behaviour cloning" in r.stdout and "trajplan TT, wBC as prior" in r.stdout
    assert len(list((tmp_path / "eval").glob("*/eval.json"))) == 4
    prior = json.loads((tmp_path / "eval" / "TT+prior" / "eval.json").read_text())["plan"]
    assert prior["prior"] == str(tmp_path / "runs" / "wbc")


@pytest.mark.slow
def test_bench_learning_prints_a_table_and_the_json_figures(
    minari_root: Path, halfcheetah_dataset: str, tmp_path: Path
) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_learning.py"), "--dataset",
           halfcheetah_dataset, "--config", "tiny", "--set",
           "train.epochs=1", "--episodes", "2", "--episode-steps", "3", "--bc-steps", "20",
           "--iql-steps", "20", "--workers", "1", "--threads", "1",
           "--out", str(tmp_path / "b")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("dataset_normalized", "bc_normalized", "wbc_normalized", "tt_normalized",
                "tt_stderr", "tt_prior_normalized", "tt_prior_action_share",
                "wbc_noisy_normalized", "tt_prior_minus_wbc_noisy", "iql_normalized",
                "iql_stderr", "ttq_normalized", "ttq_stderr", "ttq_minus_tt",
                "iql_train_min", "critic_h1_normalized", "iql_noisy_normalized",
                "critic_h1_minus_iql_noisy", "ttq_own_normalized",
                "ttq_own_minus_iql"):  # fmt: skip
        assert isinstance(figures[key], float), key
    assert figures["critic_h1_minus_iql_noisy"] == pytest.approx(
        figures["critic_h1_normalized"] - figures["iql_noisy_normalized"], abs=0.011
    )
    assert not [k for k in figures if k.endswith(("_iqm", "_ci_low", "_mean"))]  # not seeded
    assert figures["tt_prior_minus_wbc_noisy"] == pytest.approx(
        figures["tt_prior_normalized"] - figures["wbc_noisy_normalized"], abs=0.011
    )
    assert figures["ttq_minus_tt"] == pytest.approx(
        figures["ttq_normalized"] - figures["tt_normalized"], abs=0.011
    )
    assert figures["comparable"] is False  # capped episodes are labelled
    assert figures["iql_steps"] == 20
    assert figures["iql_run"] == str(tmp_path / "b" / "iql")
    assert not [k for k in figures if k.endswith("_success")]  # HalfCheetah has no goal
    assert "TT, wBC as prior" in r.stdout and "the prior's noise" in r.stdout
    assert "IQL" in r.stdout and "TT + Q (IQL's Q)" in r.stdout and "success" not in r.stdout
    assert figures["ttq_candidates"] == "iql" and "candidate actions: IQL's actor" in r.stdout
    # IQL trained with the env's preset for the given steps, evaluated next to its run
    iql = json.loads((tmp_path / "b" / "iql" / "config.json").read_text())
    assert iql["domain"] == "locomotion" and iql["config"]["steps"] == 20
    assert iql["config"]["expectile"] == 0.7
    # IQL's own and IQL + the prior's noise (the candidates at random)
    assert len(list((tmp_path / "b" / "iql" / "eval").glob("*/eval.json"))) == 2
    (iql_noisy,) = (tmp_path / "b" / "iql" / "eval").glob("*-noise0.1-*/eval.json")
    assert json.loads(iql_noisy.read_text())["plan"]["action_noise"] == 0.1
    # every evaluation is kept next to its run; TT's with the wBC run as prior apart, and
    # wBC's with the prior's noise apart (its plan says so)
    assert len(list((tmp_path / "b" / "bc" / "eval").glob("*/eval.json"))) == 1
    (noisy,) = (tmp_path / "b" / "wbc" / "eval").glob("*-noise0.1-*/eval.json")
    assert json.loads(noisy.read_text())["plan"] == {"policy": "bc", "action_noise": 0.1}
    assert len(list((tmp_path / "b" / "wbc" / "eval").glob("*/eval.json"))) == 2
    from trajplan.evaluation.evalfiles import (
        latest_eval,  # the newer, noisy one does not speak for wBC
    )

    assert latest_eval(tmp_path / "b" / "wbc") not in (None, noisy)
    wbc = json.loads((tmp_path / "b" / "wbc" / "config.json").read_text())
    assert wbc["config"]["action_weighting"] == 2.0
    evals = (tmp_path / "b" / "tt" / "eval").glob("*-prior-*/eval.json")
    (with_prior,) = [p for p in evals if "critic" not in p.parent.name]  # TT + Q has one too
    assert json.loads(with_prior.read_text())["plan"]["prior"] == str(tmp_path / "b" / "wbc")
    critic_evals = list((tmp_path / "b" / "tt" / "eval").glob("*-criticq-*/eval.json"))
    (alone,) = [p for p in critic_evals if "-h1-" in p.parent.name]
    with_q, own = sorted(  # IQL's candidates (its actor as prior), then the model's own
        (p for p in critic_evals if "-h1-" not in p.parent.name),
        key=lambda p: "-prior-" not in p.parent.name,
    )
    h1 = json.loads(alone.read_text())
    assert h1["plan"]["horizon"] == 1 and h1["plan"]["critic"] == str(
        (tmp_path / "b" / "iql").resolve()
    )
    assert h1["summary"]["score_mean"] == pytest.approx(figures["critic_h1_normalized"], abs=0.006)
    ttq = json.loads(with_q.read_text())
    assert ttq["plan"]["critic"] == str((tmp_path / "b" / "iql").resolve())
    assert ttq["plan"]["prior"] == str((tmp_path / "b" / "iql").resolve())
    assert ttq["summary"]["score_mean"] == pytest.approx(figures["ttq_normalized"], abs=0.006)
    own_doc = json.loads(own.read_text())  # TT + Q over the model's own candidates: no prior
    assert own_doc["plan"]["critic"] == ttq["plan"]["critic"] and not own_doc["plan"]["prior"]
    assert own_doc["summary"]["score_mean"] == pytest.approx(
        figures["ttq_own_normalized"], abs=0.006
    )
    assert len(list((tmp_path / "b" / "tt" / "eval").glob("*/eval.json"))) == 5


@pytest.mark.slow
def test_bench_learning_on_a_goal_maze_reports_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same script on a PointMaze waypoint dataset, with an IQL run given (--iql-run,
    its critic's V for TT + Q): every row's success rate; the data's goal segments are not
    the evaluated task, so the dataset row has no score. An IQL run that is none fails in
    one line before anything trains."""
    pytest.importorskip("gymnasium_robotics")
    from trajplan.baselines.iql import IQLConfig, train_iql
    from trajplan.behaviour.collect import collect

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    dataset = "test/pointmaze/umaze-v0"
    collect("pointmaze-umaze", "waypoint", 600, dataset, seed=0, progress=False)
    iql = train_iql(dataset, tmp_path / "iql", progress=False,
                    cfg=IQLConfig(steps=20, batch_size=32, hidden=[16], log_every=20))  # fmt: skip
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_learning.py"), "--dataset", dataset,
           "--config", "tiny", "--set", "train.epochs=1", "--episodes", "2", "--episode-steps",
           "3", "--bc-steps", "20", "--workers", "1", "--threads", "1",
           "--out", str(tmp_path / "m")]  # fmt: skip
    r = subprocess.run([*cmd, "--iql-run", str(iql)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    rows = ("bc", "wbc", "iql", "tt", "ttq", "ttq_own", "tt_prior", "wbc_noisy", "critic_h1",
            "iql_noisy")  # fmt: skip
    for key in rows:
        assert isinstance(figures[f"{key}_success"], float), key
        assert 0.0 <= figures[f"{key}_success"] <= 1.0
        assert isinstance(figures[f"{key}_normalized"], float), key
    assert figures["dataset_normalized"] is None and figures["tt_minus_dataset"] is None
    assert "goal segments" in figures["dataset_note"]
    assert figures["iql_run"] == str(iql) and figures["iql_steps"] == 20
    assert not (tmp_path / "m" / "iql").exists()
    assert "success" in r.stdout and "TT + Q (IQL's Q)" in r.stdout
    evals = sorted((tmp_path / "m" / "tt" / "eval").glob("*-prior-criticq-*/eval.json"))
    (with_q,) = [e for e in evals if "-h1-" not in e.parent.name]  # TT + Q at its horizon
    (alone,) = (tmp_path / "m" / "tt" / "eval").glob("*-h1-*-criticq-*/eval.json")
    assert json.loads(alone.read_text())["plan"]["horizon"] == 1
    doc = json.loads(with_q.read_text())
    assert doc["plan"]["critic"] == str(iql.resolve())
    assert doc["summary"]["success_rate"] == figures["ttq_success"]
    assert len(list((iql / "eval").glob("*/eval.json"))) == 2  # next to its run, +- noise
    bad = subprocess.run([*cmd, "--iql-run", str(tmp_path), "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True)  # fmt: skip
    one_line_error(bad, "is not an IQL run")
    assert not (tmp_path / "bad").exists()


def test_bench_learning_seed_statistics_by_hand() -> None:
    """The seeded figures at known numbers: a row's mean over seeds, IQM and CI are
    aggregate.py's; a paired difference pairs episodes by seed and counts the seeds on each
    side; a reused run names its seed with {seed} when seeded, and only then."""
    import argparse
    import importlib.util

    from trajplan.evaluation.aggregate import bootstrap_ci, iqm

    spec = importlib.util.spec_from_file_location(
        "bench_learning", ROOT / "scripts" / "bench_learning.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    a = [[10.0, 20.0, 30.0], [40.0, 50.0, 90.0]]
    st = bench.seeded_stats(a)
    assert st["mean"] == pytest.approx((20.0 + 60.0) / 2)
    assert st["iqm"] == pytest.approx(iqm(np.array([10, 20, 30, 40, 50, 90.0])))
    assert st["iqm"] == pytest.approx((20 + 30 + 40 + 50) / 4)
    ci = bootstrap_ci([np.asarray(x) for x in a])["iqm"]
    assert (st["ci_low"], st["ci_high"]) == pytest.approx(ci)

    def ev(scores: list[float]) -> dict:
        return {"scores": scores, "episode_seeds": [0, 1, 2], "eval_json": "x"}

    b = [[9.0, 20.0, 25.0], [45.0, 50.0, 95.0]]  # seed 0: a above by 2, seed 1: below by 10/3
    d = bench.paired_stats([ev(x) for x in a], [ev(x) for x in b])
    assert d["mean"] == pytest.approx((2.0 - 10.0 / 3) / 2)
    assert (d["seeds_above"], d["seeds_below"]) == (1, 1)
    diffs = [np.asarray(x) - np.asarray(y) for x, y in zip(a, b, strict=True)]
    assert (d["ci_low"], d["ci_high"]) == pytest.approx(bootstrap_ci(diffs)["mean"])
    other = {**ev(b[0]), "episode_seeds": [3, 4, 5]}
    with pytest.raises(TrajplanError, match="other episodes"):
        bench.paired_stats([ev(a[0])], [other])

    assert bench.given_run("runs/x/seed{seed}/tt", 2) == Path("runs/x/seed2/tt")
    assert bench.given_run("runs/tt", None) == Path("runs/tt") and bench.given_run(None, 1) is None
    given = dict(tt_run=None, bc_run=None, wbc_run=None, iql_run=None)
    bench.check_given_runs(argparse.Namespace(**given, seeds="0-2"))
    bench.check_given_runs(argparse.Namespace(**{**given, "iql_run": "r/s{seed}"}, seeds="0-2"))
    with pytest.raises(TrajplanError, match="--iql-run r/iql: with --seeds"):
        bench.check_given_runs(argparse.Namespace(**{**given, "iql_run": "r/iql"}, seeds="0-2"))
    with pytest.raises(TrajplanError, match="needs --seeds"):
        bench.check_given_runs(argparse.Namespace(**{**given, "tt_run": "r/s{seed}"}, seeds=None))


def bench_row(run_kind: str, doc: dict) -> str:
    """Which bench_learning row an eval.json of a seed's run is, from its plan."""
    plan = doc["plan"]
    if run_kind in ("bc", "wbc", "iql"):
        return run_kind + ("_noisy" if plan.get("action_noise") else "")
    if plan.get("horizon") == 1:
        return "critic_h1"
    if plan.get("critic"):
        return "ttq" if plan.get("prior") else "ttq_own"
    return "tt_prior" if plan.get("prior") else "tt"


@pytest.mark.slow
def test_bench_learning_over_seeds_pairs_each_seeds_runs_and_aggregates_them(
    minari_root: Path, hopper_dataset: str, tmp_path: Path
) -> None:
    """--seeds 0-1: every learned row trained once per seed with that seed, the rows that
    combine runs pair the same seed's runs, and the IQM, its CI and the paired differences
    are aggregate.py's over the eval files written."""
    from trajplan.evaluation.aggregate import bootstrap_ci, iqm

    out = tmp_path / "s"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_learning.py"), "--dataset",
           hopper_dataset, "--config", "tiny", "--set", "train.epochs=1", "--episodes", "2",
           "--episode-steps", "3", "--bc-steps", "10", "--iql-steps", "10", "--workers", "1",
           "--threads", "1", "--seeds", "0-1", "--out", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    rows = ("bc", "wbc", "iql", "tt", "ttq", "ttq_own", "critic_h1", "iql_noisy", "tt_prior",
            "wbc_noisy")  # fmt: skip
    for key in rows:
        for part in ("normalized", "iqm", "ci_low", "ci_high"):
            assert isinstance(figures[f"{key}_{part}"], float), f"{key}_{part}"
        assert figures[f"{key}_ci_low"] <= figures[f"{key}_iqm"] <= figures[f"{key}_ci_high"]
    pairs = [("ttq_own", "iql"), ("ttq_own", "wbc"), ("ttq_own", "critic_h1"), ("tt", "wbc"),
             ("tt_prior", "wbc_noisy"), ("critic_h1", "iql_noisy")]  # fmt: skip
    for a, b in pairs:
        for part in ("mean", "ci_low", "ci_high"):
            assert isinstance(figures[f"{a}_minus_{b}_{part}"], float), (a, b, part)
        assert figures[f"{a}_minus_{b}_seeds_above"] + figures[f"{a}_minus_{b}_seeds_below"] <= 2
    assert figures["training_seeds"] == [0, 1]
    assert "95% bootstrap CI over seeds and episodes" in r.stdout
    assert "paired differences" in r.stdout

    scores: dict[str, list[list[float]]] = {}
    for seed in (0, 1):
        runs = {k: out / f"seed{seed}" / k for k in ("bc", "wbc", "iql", "tt")}
        for kind, run in runs.items():  # each trained with its seed
            assert str(run) in figures[f"{kind}_runs"]
            config = json.loads((run / "config.json").read_text())["config"]
            assert (config["train"]["seed"] if kind == "tt" else config["seed"]) == seed
        iql_path = str(runs["iql"].resolve())
        seen = []
        for kind, run in runs.items():
            for path in sorted((run / "eval").glob("*/eval.json")):
                doc = json.loads(path.read_text())
                row = bench_row(kind, doc)
                seen.append(row)
                plan = doc["plan"]  # combined rows pair this seed's runs
                if plan.get("critic"):
                    assert plan["critic"] == iql_path, (row, plan)
                if plan.get("prior"):
                    other = "wbc" if row == "tt_prior" else "iql"
                    assert plan["prior"] == str(runs[other].resolve()), (row, plan)
                assert [e["seed"] for e in doc["episodes"]] == [0, 1]
                scores.setdefault(row, []).append([e["score"] for e in doc["episodes"]])
        assert sorted(seen) == sorted(rows)  # one eval per row and seed
    for key in rows:  # aggregate.py's figures over the two seeds' eval files
        arrays = [np.asarray(s) for s in scores[key]]
        ci = bootstrap_ci(arrays)["iqm"]
        assert figures[f"{key}_normalized"] == pytest.approx(
            np.mean([a.mean() for a in arrays]), abs=0.006
        )
        assert figures[f"{key}_iqm"] == pytest.approx(iqm(np.concatenate(arrays)), abs=0.006)
        assert (figures[f"{key}_ci_low"], figures[f"{key}_ci_high"]) == pytest.approx(ci, abs=0.006)
    for a, b in pairs:  # paired by seed and episode
        diffs = [np.asarray(x) - np.asarray(y) for x, y in zip(scores[a], scores[b], strict=True)]
        per_seed = np.array([d.mean() for d in diffs])
        name = f"{a}_minus_{b}"
        assert figures[f"{name}_mean"] == pytest.approx(per_seed.mean(), abs=0.006)
        ci = bootstrap_ci(diffs)["mean"]
        assert (figures[f"{name}_ci_low"], figures[f"{name}_ci_high"]) == pytest.approx(
            ci, abs=0.006
        )
        assert figures[f"{name}_seeds_above"] == int((per_seed > 0).sum())
    # the same benchmark over the same runs (a stopped one, run again): every evaluation
    # saved above is read back, none is played again, and the figures are the same
    evals_before = sorted(out.glob("seed*/*/eval/*/eval.json"))
    given = [f"--{k}-run={out}/seed{{seed}}/{k}" for k in ("tt", "bc", "wbc", "iql")]
    again = subprocess.run([*cmd[:-2], *given, "--out", str(tmp_path / "again")],
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(out.glob("seed*/*/eval/*/eval.json")) == evals_before
    figures_again = json.loads(again.stdout.strip().splitlines()[-1])
    for key in rows:
        assert figures_again[f"{key}_normalized"] == figures[f"{key}_normalized"], key
    # a reused run must name its seed: one run for every seed would pair nothing
    bad = subprocess.run([*cmd[:-2], "--tt-run", str(out / "seed0" / "tt"), "--out",
                          str(tmp_path / "bad")], capture_output=True, text=True)  # fmt: skip
    one_line_error(bad, "{seed}")
    assert not (tmp_path / "bad").exists()


def test_cli_eval_over_workers_writes_the_same_episodes(tiny_run: Path, tmp_path: Path) -> None:
    def run(*extra: str) -> dict:
        out = tmp_path / f"ev{len(extra)}"
        cli("eval", str(tiny_run), "--episodes", "3", "--episode-steps", "4", "--out", str(out),
            "--no-progress", *extra, process=True)  # fmt: skip
        return json.loads(next(out.glob("*/eval.json")).read_text())

    one, two = run("--threads", "1"), run("--workers", "2", "--threads", "1")
    assert [e["seed"] for e in two["episodes"]] == [0, 1, 2]
    assert [e["rewards"] for e in one["episodes"]] == [e["rewards"] for e in two["episodes"]]
    bad = cli("eval", str(tiny_run), "--workers", "2", "--video", str(tmp_path / "v"),
              process=True, code=2)  # fmt: skip
    one_line_error(bad, "without --video")
