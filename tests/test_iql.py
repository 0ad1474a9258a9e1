"""Implicit Q-Learning (trajplan.baselines.iql): its loss, what it learns on a bandit whose
answer is known, the run directory and its critic, the CLI, and evaluation next to BC."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import cli, one_line_error

from trajplan.baselines.iql import IQLConfig, iql_domain, iql_preset, train_iql
from trajplan.errors import TrajplanError
from trajplan.runs.iql import load_iql

BANDIT_ID = "test/pendulum/bandit-v0"
BANDIT_ACTIONS = np.array([-1.5, -0.5, 0.5, 1.5])  # Pendulum's box is [-2, 2]
BANDIT_REWARDS = np.array([0.0, 1.0, 3.0, 0.5])  # the best action is 0.5
BANDIT_OBS = np.array([1.0, 0.0, 0.0], np.float32)  # the one state


def tiny(**kw: Any) -> IQLConfig:
    """A config small enough for a test: 2x32 nets, batch 64."""
    return IQLConfig(**{"hidden": [32, 32], "batch_size": 64, "log_every": 50, **kw})


def tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


# -- the loss ---------------------------------------------------------------------------------


def test_expectile_loss_on_hand_computed_values() -> None:
    from trajplan.baselines.iql_nets import expectile_loss

    diff = torch.tensor([-1.0, 2.0])
    # tau 0.7: 0.3 * 1 + 0.7 * 4 = 3.1, mean 1.55; tau 0.5: half the squared error
    assert expectile_loss(diff, 0.7).tolist() == pytest.approx([0.3, 2.8])
    assert float(expectile_loss(diff, 0.7).mean()) == pytest.approx(1.55)
    assert expectile_loss(diff, 0.5).tolist() == pytest.approx([0.5, 2.0])


# -- presets and config ------------------------------------------------------------------------


def test_presets_follow_the_domain_and_bad_values_are_one_line_errors() -> None:
    assert [iql_domain(n) for n in ("Hopper-v5", "halfcheetah", "AntMaze_UMaze-v4",
            "D4RL/pointmaze/umaze-v2", "maze2d-umaze-v1")] == [
        "locomotion", "locomotion", "antmaze", "pointmaze", "pointmaze"]  # fmt: skip
    loco, ant, point = (iql_preset(n) for n in ("Hopper-v5", "AntMaze_Medium-v4", "PointMaze"))
    assert (loco.expectile, loco.temperature, loco.normalize_rewards) == (0.7, 3.0, True)
    assert (ant.expectile, ant.temperature, ant.reward_offset) == (0.9, 10.0, -1.0)
    assert (point.expectile, point.temperature, point.reward_offset) == (0.9, 10.0, 0.0)
    assert not ant.normalize_rewards and not point.normalize_rewards
    for bad, words in (
        ({"expectile": 1.0}, "iql expectile must be in (0, 1), got 1.0"),
        ({"temperature": -1.0}, "iql temperature must be >= 0"),
        ({"steps": 0}, "iql steps must be at least 1"),
        ({"hidden": []}, "iql hidden sizes"),
        ({"polyak": 0.0}, "iql polyak"),
        ({"discount": 1.0}, "iql discount"),
        ({"steps": 1.5}, "iql.steps: expected an integer"),
        ({"actor_cosine": "yes"}, "iql.actor_cosine: expected true or false"),
    ):
        with pytest.raises(TrajplanError) as err:
            IQLConfig(**bad).check()
        assert words in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(TrajplanError, match="unknown key 'tau'"):
        IQLConfig.from_dict({"tau": 0.7})


def test_run_kind_tells_iql_runs_from_bc_and_tt_runs(tmp_path) -> None:
    """`trajplan.runs.run_kind` reads the format in config.json; the evaluation runner asks
    it which runs plan (tt) and which act (bc, iql)."""
    import json

    from trajplan.runs import run_kind
    from trajplan.runs.iql import IQL_FORMAT
    from trajplan.runs.policy import BC_FORMAT

    for name, fmt, kind in (("i", IQL_FORMAT, "iql"), ("b", BC_FORMAT, "bc"), ("t", "x", "tt")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"format": fmt}))
        assert run_kind(tmp_path / name) == kind


# -- transitions -------------------------------------------------------------------------------


def test_td_targets_mask_terminations_and_bootstrap_truncations() -> None:
    """Episode 0 (3 steps) is truncated, episode 1 (2 steps) terminated: each step links to
    the observation after it, an episode's last step to its final observation (rows 5, 6 of
    the table); only the termination has mask 0. Without final observations the truncated
    last step is left out."""
    import dataclasses

    from trajplan.baselines.iql_data import prepare as _prepare
    from trajplan.data.episodes import Episodes

    ep = Episodes(
        observations=np.arange(10, dtype=np.float32).reshape(5, 2),
        actions=np.zeros((5, 1), np.float32), rewards=np.array([1, 2, 3, 4, 5], np.float32),
        terminations=np.array([0, 0, 0, 0, 1], bool), truncations=np.array([0, 0, 1, 0, 0], bool),
        starts=np.array([0, 3]), lengths=np.array([3, 2]), dataset_id="t", env_id="Pendulum-v1",
        final_observations=np.array([[20, 21], [30, 31]], np.float32),
    ).validate()  # fmt: skip
    box = np.array([-2.0]), np.array([2.0])
    d = _prepare(ep, *box, IQLConfig(normalize_rewards=False))
    assert d.rows.tolist() == [0, 1, 2, 3, 4]
    assert d.nxt.tolist() == [1, 2, 5, 4, 6]
    assert d.mask.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]
    raw = d.obs.numpy() * d.std + d.mean  # the table of observations, un-normalised
    np.testing.assert_allclose(raw[[5, 6]], [[20, 21], [30, 31]], atol=1e-4)
    np.testing.assert_allclose(d.mean, [4.0, 5.0])  # the steps' statistics only
    unknown = _prepare(dataclasses.replace(ep, final_observations=None), *box, IQLConfig())
    assert unknown.rows.tolist() == [0, 1, 3, 4] and unknown.nxt[unknown.rows].tolist() == [
        1, 2, 4, 4]  # fmt: skip
    scaled = _prepare(ep, *box, IQLConfig(reward_offset=-1.0))
    # returns 6 and 9: rewards x 1000 / 3, then - 1
    assert scaled.rew.tolist() == pytest.approx([1000 / 3 * r - 1 for r in range(1, 6)])


def test_the_loader_keeps_each_episodes_final_observation(minari_datasets) -> None:
    from trajplan.data.transitions import load_episodes, split_episodes

    ep = load_episodes(minari_datasets.hopper)
    written = minari_datasets.written[minari_datasets.hopper]
    assert ep.final_observations is not None and ep.final_observations.shape == (8, 11)
    want = np.stack([w["observations"][-1] for w in written]).astype(np.float32)
    np.testing.assert_array_equal(ep.final_observations, want)
    train, val = split_episodes(ep, 0.25, seed=0)
    assert train.final_observations.shape == (6, 11) and val.final_observations.shape == (2, 11)
    both = np.concatenate([train.final_observations, val.final_observations])
    assert sorted(map(tuple, both)) == sorted(map(tuple, want))


# -- learning ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bandit(minari_datasets) -> str:
    """One state, four actions with known rewards, 32 one-step (terminated) episodes each."""
    from trajplan.data.install import create_dataset

    rng = np.random.default_rng(0)
    episodes = []
    for i in range(128):
        k = i % 4
        noise = rng.normal(scale=0.05)  # actions near each choice, not on it
        episodes.append({
            "observations": np.stack([BANDIT_OBS, BANDIT_OBS]),
            "actions": np.array([[BANDIT_ACTIONS[k] + noise]], np.float32),
            "rewards": np.array([BANDIT_REWARDS[k]]),
            "terminations": np.array([True]), "truncations": np.array([False]),
        })  # fmt: skip
    create_dataset(BANDIT_ID, episodes, "Pendulum-v1", algorithm_name="bandit")
    return BANDIT_ID


def test_q_ranks_the_best_action_first_and_the_actor_moves_to_it(
    bandit: str, tmp_path: Path, one_thread
) -> None:
    cfg = tiny(steps=1500, lr=1e-3, normalize_rewards=False)  # locomotion's 0.7 and 3
    run = load_iql(train_iql(bandit, tmp_path / "iql", cfg, progress=False))
    critic = run.critic()
    obs = torch.as_tensor(np.tile(BANDIT_OBS, (4, 1)))
    q = critic.q(obs, torch.as_tensor(BANDIT_ACTIONS[:, None])).numpy()  # [4]
    assert np.argsort(-q).tolist() == np.argsort(-BANDIT_REWARDS).tolist()
    assert q == pytest.approx(BANDIT_REWARDS, abs=0.3)  # terminal: Q = r, no bootstrap
    v = float(critic.v(obs[:1])[0])
    assert 1.0 < v < 3.0  # an upper expectile of the rewards, below their max
    # the data's mean action is 0 (BC's answer); IQL's actor leans to the best, 0.5
    action = float(run.actor.act(BANDIT_OBS)[0])
    assert abs(action - 0.5) < 0.15, action


# -- the run directory ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(minari_datasets, tmp_path_factory, one_thread) -> tuple[Path, Any, Any]:
    """An IQL run on the HalfCheetah fixture, the nets it was written from and its data."""
    from trajplan.baselines import iql

    captured: dict[str, Any] = {}
    write = iql.write_run

    def keep(out, nets, lines, d, doc):
        captured.update(nets=nets, data=d)
        return write(out, nets, lines, d, doc)

    patch = pytest.MonkeyPatch()
    patch.setattr(iql, "write_run", keep)
    try:
        out = tmp_path_factory.mktemp("iql") / "iql"
        train_iql(minari_datasets.halfcheetah, out, tiny(steps=100), progress=False)
    finally:
        patch.undo()
    return out, captured["nets"], captured["data"]


def test_run_round_trip_actor_and_critic_are_the_trained_nets(trained, minari_datasets) -> None:
    from trajplan.data.transitions import load_episodes
    from trajplan.runs import load_run
    from trajplan.runs.iql import Critic, IQLRun

    out, nets, d = trained
    doc = json.loads((out / "config.json").read_text())
    assert doc["format"] == "trajplan-iql/1" and doc["env"] == "halfcheetah"
    assert doc["ref_min"] == -300.0 and doc["domain"] == "locomotion"
    assert doc["n_transitions"] == 4 * 60  # 4 truncated episodes of 60 steps, all kept
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [50, 100] and lines[0]["kind"] == "iql"
    assert {"q_loss", "v_loss", "actor_loss", "q_mean", "v_mean", "adv_mean"} <= set(lines[0])
    run = load_run(out)
    assert isinstance(run, IQLRun) and run.kind == "iql" and run.settings() == {"policy": "iql"}
    assert run.references("halfcheetah").ref_min == -300.0

    ep = load_episodes(minari_datasets.halfcheetah)
    raw_obs, raw_act = ep.observations[:32], ep.actions[:32]  # float32 numpy
    x = torch.as_tensor((raw_obs.astype(np.float64) - d.mean) / d.std, dtype=torch.float32)
    a = torch.as_tensor(raw_act)  # HalfCheetah's box is [-1, 1]: normalised = raw
    with torch.no_grad():
        want_act = nets.mean_action(x).numpy()  # [32, 6]
        want_q = nets.q_target(x, a).numpy() / d.reward_scale  # [32]
        want_v = nets.value(x).numpy() / d.reward_scale
    np.testing.assert_allclose(run.actor.act(raw_obs), want_act, atol=1e-5)
    policy = run.policy("halfcheetah")
    policy.reset(32)
    np.testing.assert_allclose(policy.act(raw_obs), want_act, atol=1e-5)

    critic = run.critic("cpu")
    assert isinstance(critic, Critic) and (critic.obs_dim, critic.act_dim) == (17, 6)
    for dtype in (torch.float32, torch.float64):
        o, ac = torch.as_tensor(raw_obs, dtype=dtype), torch.as_tensor(raw_act, dtype=dtype)
        q, v = critic.q(o, ac), critic.v(o)
        assert q.shape == (32,) and v.shape == (32,) and q.dtype == torch.float32
        np.testing.assert_allclose(q.numpy(), want_q, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(v.numpy(), want_v, rtol=1e-4, atol=1e-3)
    assert not np.allclose(want_q, want_q[0])  # states and actions matter
    with pytest.raises(TrajplanError, match=r"observations \[R, 17\]"):
        critic.q(torch.zeros(3, 5), torch.zeros(3, 6))


def test_same_seed_same_weights(trained, minari_datasets, tmp_path: Path, one_thread) -> None:
    out = trained[0]
    again = train_iql(minari_datasets.halfcheetah, tmp_path / "a", tiny(steps=100), False)
    other = train_iql(minari_datasets.halfcheetah, tmp_path / "b", tiny(steps=100, seed=1), False)
    for name in ("policy.actor.safetensors", "critic.safetensors"):
        first, same, diff = (tensors(p / name) for p in (out, again, other))
        assert first.keys() == same.keys()
        assert all(np.array_equal(first[k], same[k]) for k in first)
        key = "layers.0.weight" if "policy" in name else "q1.0.weight"
        assert not np.array_equal(first[key], diff[key])


def test_a_run_without_config_is_not_finished_and_errors_are_one_line(
    trained, tmp_path: Path, minari_root: Path
) -> None:
    from trajplan.runs.iql import is_iql_run

    out = trained[0]
    assert is_iql_run(out) and not is_iql_run(out.parent)
    half = tmp_path / "half"
    half.mkdir()
    for name in ("policy.actor.safetensors", "critic.safetensors", "metrics.jsonl"):
        (half / name).write_bytes((out / name).read_bytes())
    assert not is_iql_run(half)  # config.json comes last
    with pytest.raises(TrajplanError, match="not a trajplan IQL run"):
        load_iql(half)
    with pytest.raises(TrajplanError, match="already exists"):
        train_iql("test/halfcheetah/random-v0", out, tiny(steps=1), progress=False)
    with pytest.raises(TrajplanError, match="not found"):
        train_iql("test/none/missing-v0", tmp_path / "m", tiny(steps=1), progress=False)


# -- the command line and evaluation ---------------------------------------------------------


def test_iql_cli_and_eval_next_to_bc(halfcheetah_dataset: str, tmp_path: Path, one_thread) -> None:
    iql_out, bc_out, ev = tmp_path / "iql", tmp_path / "bc", tmp_path / "ev"
    cli("iql", "--dataset", halfcheetah_dataset, "--out", str(iql_out), "--steps", "20",
        "--hidden", "16,16", "--batch-size", "32", "--expectile", "0.8",
        "--no-progress")  # fmt: skip
    cfg = json.loads((iql_out / "config.json").read_text())["config"]
    assert (cfg["expectile"], cfg["temperature"], cfg["steps"]) == (0.8, 3.0, 20)
    cli("bc", "--dataset", halfcheetah_dataset, "--out", str(bc_out), "--steps", "20",
        "--hidden", "16", "--no-progress")  # fmt: skip
    cli("eval", str(bc_out), str(iql_out), "--episodes", "2", "--episode-steps", "5",
        "--out", str(ev), "--no-progress")  # fmt: skip
    docs = {p.parent.name.split("-")[0]: json.loads(p.read_text()) for p in ev.rglob("eval.json")}
    assert docs.keys() == {"bc", "iql"}
    bc, iql = docs["bc"], docs["iql"]
    assert iql["plan"] == {"policy": "iql"} and bc["plan"] == {"policy": "bc"}
    assert iql.keys() == bc.keys() and iql["summary"].keys() == bc["summary"].keys()
    assert [e["seed"] for e in iql["episodes"]] == [e["seed"] for e in bc["episodes"]]
    assert iql["summary"]["episodes"] == 2 and iql["summary"]["score_mean"] is not None
    for bad, words in (
        (["--out", str(iql_out)], ("already exists",)),
        (["--out", str(tmp_path / "x"), "--expectile", "1.5"], ("expectile", "(0, 1)")),
        (["--out", str(tmp_path / "y"), "--hidden", "a"], ("comma-separated",)),
        (["--out", str(tmp_path / "z"), "--steps", "0"], ("at least 1",)),
    ):
        one_line_error(cli("iql", "--dataset", halfcheetah_dataset, *bad, code=2), *words)
    missing = cli("iql", "--dataset", "test/none/missing-v0", "--out", str(tmp_path / "m"), code=2)
    one_line_error(missing, "not found")
