"""Goal-conditioned TT: the goal position changes predictions, cached == full == the reference
search and batched == alone with it, hindsight relabelling on known episodes, goals of the
wrong size, and a tiny model trained on constructed trajectories that reaches constructed
goals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import tiny_model
from test_reference_search import reference_planner

from trajplan.config import DataConfig, PlanConfig, check_data_config
from trajplan.data.episodes import Episodes
from trajplan.data.hindsight import hindsight_goals, step_goals, with_hindsight_goals
from trajplan.data.tokens import Discretizer
from trajplan.data.transitions import prepare_episodes
from trajplan.errors import TrajplanError
from trajplan.model.decoding import feed_goal, forward_cached, forward_shared, new_cache
from trajplan.planner import Planner
from trajplan.planner.goals import GoalPlanner

pytestmark = pytest.mark.usefixtures("one_thread")

OBS, ACT, N = 3, 2, 12
D = OBS + ACT + 2
GOAL = dict(obs_dim=OBS, act_dim=ACT, vocab_size=N, n_embd=32, goal_dim=2)


def goal_model(seed: int = 0, **kw):
    """A random goal-conditioned model (large weights: peaked predictions), float64."""
    return tiny_model(seed, transitions=6, noise=0.3, **{**GOAL, **kw}).double()


def random_discretizer(seed: int = 0) -> Discretizer:
    rng = np.random.default_rng(seed)
    return Discretizer(np.sort(rng.normal(size=(N + 1, D)), axis=0), N)


def test_goal_changes_predictions_and_no_goal_model_is_unchanged() -> None:
    model = goal_model()
    idx = torch.randint(0, N, (2, 2 * D + 1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, _ = model(idx, goal=torch.tensor([[1, 2], [1, 2]]))
        b, _ = model(idx, goal=torch.tensor([[1, 2], [9, 4]]))
    torch.testing.assert_close(a[0], b[0])  # same goal, same predictions
    assert (a[1] - b[1]).abs().max() > 1e-3  # another goal: other predictions, every position
    assert ((a[1] - b[1]).abs().amax(-1) > 1e-6).all()
    with pytest.raises(ValueError, match="goal-conditioned"):
        model(idx)  # the goal removed: refused, not silently ignored
    plain = tiny_model(0, transitions=6, noise=0.3, obs_dim=OBS, act_dim=ACT, vocab_size=N)
    assert "goal_emb.weight" not in plain.state_dict()  # the checkpoint format is unchanged
    with pytest.raises(ValueError, match="no goal"):
        plain(idx, goal=torch.tensor([[1, 2], [1, 2]]))


def test_goal_of_the_wrong_size_is_one_clear_error() -> None:
    model = goal_model()
    idx = torch.zeros(1, D, dtype=torch.long)
    with pytest.raises(ValueError, match=r"this model takes \[batch, 2\]"):
        model(idx, goal=torch.zeros(1, 3, dtype=torch.long))
    planner = Planner(
        model, random_discretizer(), PlanConfig(horizon=2, beam_width=2), goal_dims=[0, 1]
    )
    planner.reset(1)
    with pytest.raises(TrajplanError, match=r"a goal of 2 values per episode \(dims 0,1\)"):
        planner.set_goal(np.zeros((1, 3)))
    with pytest.raises(TrajplanError, match="--goal has 3 values, the model's goal has 2"):
        GoalPlanner(planner, 2, goal=[0.0, 1.0, 2.0])
    with pytest.raises(TrajplanError, match="the model takes a goal of 2 dims"):
        Planner(model, random_discretizer(), PlanConfig(horizon=2, beam_width=2))
    with pytest.raises(TrajplanError, match="set a goal first"):
        planner.act(np.zeros((1, OBS)))
    with pytest.raises(TrajplanError, match="data.goal_dims must be distinct"):
        check_data_config(DataConfig(goal_dims="0,0"))


def test_cached_and_shared_decoding_equal_full_forward_with_goal() -> None:
    model = goal_model(1)
    gen = torch.Generator().manual_seed(1)
    goal = torch.randint(0, N, (2, 2), generator=gen)
    ctx = torch.randint(0, N + 1, (2, 2 * D + 3), generator=gen)
    own = torch.randint(0, N + 1, (6, 9), generator=gen)  # 3 rows per episode
    with torch.inference_mode():
        full, _ = model(torch.cat([ctx.repeat_interleave(3, 0), own], 1),
                        goal=goal.repeat_interleave(3, 0))  # fmt: skip
        cache = new_cache(model, 2)
        feed_goal(model, goal, cache)
        pieces = [forward_cached(model, ctx[:, :5], cache)]
        pieces += [forward_cached(model, ctx[:, t : t + 1], cache) for t in range(5, ctx.shape[1])]
        prefix = new_cache(model, 2)
        feed_goal(model, goal, prefix)
        forward_cached(model, ctx, prefix)
        own_cache = new_cache(model, 6, 20)
        parts = [forward_shared(model, own[:, :4], prefix, own_cache)]
        parts += [forward_shared(model, own[:, i : i + 1], prefix, own_cache) for i in range(4, 9)]
    P = ctx.shape[1]
    assert torch.allclose(torch.cat(pieces, 1), full[::3, :P], atol=1e-12)
    assert torch.allclose(torch.cat(parts, 1), full[:, P:], atol=1e-12)
    with pytest.raises(ValueError, match="starts with its goal"):
        forward_cached(model, ctx[:, :3], new_cache(model, 2))


def play(
    planner: Planner,
    goals: np.ndarray,
    obs: np.ndarray,
    steps: int,
    drop_at: int = -1,
    first_seed: int = 10,
):
    """Plan `steps` steps of E episodes (seeds first_seed..) with fixed observations
    obs [steps, E, o]; the episode at index 1 ends after step drop_at. Returns per step
    (plan tokens, actions)."""
    planner.reset(obs.shape[1], list(range(first_seed, first_seed + obs.shape[1])))
    planner.set_goal(goals)
    out = []
    for t in range(steps):
        o = obs[t] if t <= drop_at or drop_at < 0 else np.delete(obs[t], 1, axis=0)
        act = planner.act(o)
        out.append((planner.plan.tokens.clone(), act))
        planner.observe(o, act, np.zeros(o.shape[0]))
        if t == drop_at:
            planner.drop(np.arange(o.shape[0]) != 1)
    return out


@pytest.mark.parametrize("objective", ["return", "likelihood"])
def test_planning_with_goal_cached_and_full_equal_the_reference_and_batched_alone(
    objective: str,
) -> None:
    model, disc = goal_model(2), random_discretizer(2)
    cfg = PlanConfig(horizon=4, beam_width=3, n_expand=2, max_context_transitions=2)
    if objective == "likelihood":
        cfg = dataclasses.replace(cfg, objective="likelihood")
    obs = np.random.default_rng(3).normal(size=(5, 3, OBS))
    goals = np.random.default_rng(4).normal(size=(3, 2))

    def run(c: PlanConfig, o: np.ndarray, g: np.ndarray, drop_at: int = -1):
        return play(Planner(model, disc, c, goal_dims=[0, 1]), g, o, 5, drop_at)

    cached = run(cfg, obs, goals, drop_at=2)
    full = run(dataclasses.replace(cfg, mode="full"), obs, goals, drop_at=2)
    with reference_planner():
        ref = run(cfg, obs, goals, drop_at=2)
    for (tc, ac), (tf, af), (tr, ar) in zip(cached, full, ref, strict=True):
        assert torch.equal(tc, tr) and np.array_equal(ac, ar)
        assert torch.equal(tf, tr) and np.array_equal(af, ar)
    for e in range(3):
        alone = play(Planner(model, disc, cfg, goal_dims=[0, 1]), goals[e : e + 1],
                     obs[:, e : e + 1], 5 if e != 1 else 3, first_seed=10 + e)  # fmt: skip
        for t, (tok, act) in enumerate(alone):
            row = e if t <= 2 or e == 0 else e - 1  # rows after episode 1 ended
            assert torch.equal(cached[t][0][row], tok[0])
            assert np.array_equal(cached[t][1][row], act[0])
    # the goal steers the plan: other goals, other plans from the same observations
    other = run(cfg, obs, -goals, drop_at=2)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(cached, other, strict=True))


def known_episodes() -> Episodes:
    """Two episodes with obs[t] = (10 e + t, -t, 7): lengths 4 and 3, final states known."""
    obs = [[10 * e + t, -t, 7] for e, n in enumerate((4, 3)) for t in range(n)]
    n = len(obs)
    return Episodes(
        observations=np.array(obs, dtype=np.float32),
        actions=np.zeros((n, 1), dtype=np.float32),
        rewards=np.zeros(n, dtype=np.float32),
        terminations=np.zeros(n, dtype=bool),
        truncations=np.array([0, 0, 0, 1, 0, 0, 1], dtype=bool),
        starts=np.array([0, 4]),
        lengths=np.array([4, 3]),
        dataset_id="test/known-v0",
        final_observations=np.array([[4, -4, 7], [13, -3, 7]], dtype=np.float32),
    )


def test_hindsight_relabelling_of_a_known_episode() -> None:
    ep = known_episodes()
    # windows start at steps 0..len-2: 3 windows of episode 0, then 2 of episode 1
    final = hindsight_goals(ep, [0, 1])
    assert final.tolist() == [[4, -4]] * 3 + [[13, -3]] * 2
    assert step_goals(ep, [0])[:, 0].tolist() == [4] * 4 + [13] * 3
    with pytest.raises(TrajplanError, match=r"the observation has 3 dims"):
        hindsight_goals(ep, [0, 3])
    with pytest.raises(TrajplanError, match="goal env"):
        with_hindsight_goals(ep, "0,1")  # not a maze: no goal dims to fill


def line_episodes(n_per_goal: int = 8) -> Episodes:
    """A constructed 1-D world: x starts at 0 and moves by the action (+-0.25 a step,
    4 steps) to a goal at +1 or -1. The right action depends on the goal alone."""
    obs, acts, lengths, finals = [], [], [], []
    rng = np.random.default_rng(0)
    for i in range(2 * n_per_goal):
        sign = 1.0 if i % 2 == 0 else -1.0
        x = 0.0
        for _ in range(4):
            a = sign * 0.25 + rng.normal(0, 0.01)
            obs.append([x])
            acts.append([a])
            x += a
        lengths.append(4)
        finals.append([x])
    n = len(obs)
    return Episodes(
        observations=np.array(obs, dtype=np.float32),
        actions=np.array(acts, dtype=np.float32),
        rewards=np.zeros(n, dtype=np.float32),
        terminations=np.zeros(n, dtype=bool),
        truncations=np.tile([0, 0, 0, 1], 2 * n_per_goal).astype(bool),
        starts=np.arange(0, n, 4),
        lengths=np.array(lengths),
        dataset_id="test/line-v0",
        final_observations=np.array(finals, dtype=np.float32),
    )


def test_tiny_model_trained_on_constructed_trajectories_reaches_the_goals() -> None:
    data = prepare_episodes(line_episodes(), DataConfig(seq_len=2, n_bins=8, goal_dims="0"))
    w = data.windows
    assert w.goals is not None and w.goals.shape == (w.n_windows, 1)
    torch.manual_seed(0)
    model = tiny_model(0, obs_dim=1, act_dim=1, vocab_size=8, transitions=2, goal_dim=1).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    idx = torch.arange(w.n_windows)
    x, y, mask = w.get_batch(idx)
    goal = w.goal_batch(idx)
    for _ in range(300):
        _, loss = model(x, y, mask, goal)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    cfg = PlanConfig(horizon=2, beam_width=4, n_expand=2, max_context_transitions=2,
                     objective="likelihood")  # fmt: skip
    planner = Planner(model, data.discretizer, cfg, goal_dims=[0])
    for target in (1.0, -1.0):
        planner.reset(1, [0])
        planner.set_goal(np.array([[target]]))
        x_now = np.zeros((1, 1))
        for _ in range(4):  # the constructed env: x += a
            act = planner.act(x_now)
            assert np.sign(act[0, 0]) == np.sign(target)
            planner.observe(x_now, act, np.zeros(1))
            x_now = x_now + act
        assert abs(x_now[0, 0] - target) < 0.2, (target, x_now)


def maze_episodes(n: int = 40) -> Episodes:
    """PointMaze-shaped episodes [x, y, vx, vy, goal_x, goal_y] that move along x to a goal
    at x = +1 or -1 (action x = +-1); the stored goal dims hold zeros, so only a relabelled
    goal can tell the direction."""
    obs, acts, finals = [], [], []
    for i in range(n):
        sign = 1.0 if i % 2 == 0 else -1.0
        for t in range(5):
            obs.append([sign * 0.2 * t, 0.0, 0.0, 0.0, 0.0, 0.0])
            acts.append([sign, 0.0])
        finals.append([sign, 0.0, 0.0, 0.0, 0.0, 0.0])
    m = len(obs)
    return Episodes(
        observations=np.array(obs, dtype=np.float32),
        actions=np.array(acts, dtype=np.float32),
        rewards=np.zeros(m, dtype=np.float32),
        terminations=np.zeros(m, dtype=bool),
        truncations=np.tile([0, 0, 0, 0, 1], n).astype(bool),
        starts=np.arange(0, m, 5),
        lengths=np.full(n, 5),
        dataset_id="local/pointmaze/umaze-v0",
        env_id="PointMaze_UMaze-v3",
        final_observations=np.array(finals, dtype=np.float32),
    )


def test_goal_conditioned_bc_learns_from_hindsight_goals(tmp_path) -> None:
    from trajplan.baselines.bc import BCConfig, train_bc
    from trajplan.model.actor import POLICY_FILE, load_actor

    ep = maze_episodes()
    relabelled = with_hindsight_goals(ep, "0,1")
    assert relabelled.observations[:5, 4:].tolist() == [[1.0, 0.0]] * 5  # episode 0: +1
    assert relabelled.observations[5:10, 4:].tolist() == [[-1.0, 0.0]] * 5
    assert np.array_equal(relabelled.observations[:, :4], ep.observations[:, :4])
    cfg = BCConfig(hidden=[32], steps=300, val_fraction=0.0, goal_dims="0,1", log_every=100)
    run = train_bc("local/pointmaze/umaze-v0", tmp_path / "gcbc", cfg, progress=False, episodes=ep)
    actor = load_actor(run / POLICY_FILE)
    assert actor.obs_dim == 6  # the env's own layout: observation, then the goal
    at_start = np.array([[0.0, 0, 0, 0, 1, 0], [0.0, 0, 0, 0, -1, 0]])
    act = actor.act(at_start)
    assert act[0, 0] > 0.5 and act[1, 0] < -0.5  # the goal decides the direction
    with pytest.raises(TrajplanError, match="data.goal_dims must be distinct"):
        BCConfig(goal_dims="0,0").check()


def test_goal_flags_parse_or_fail_in_one_line() -> None:
    from trajplan.cli.plan import parse_goal

    assert parse_goal("1.0,-1.5") == [1.0, -1.5]
    for bad in ("1.0,x", "", "nan,1"):
        with pytest.raises(TrajplanError, match="--goal takes numbers"):
            parse_goal(bad)
