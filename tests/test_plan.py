"""Beam-search planner: sampling filters by hand, scores by hand, cached == full == the
reference search (trajplan.planner.reference), batching."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import SmallCritic, random_actor, tiny_model
from test_reference_search import reference_planner

from trajplan.config import PlanConfig
from trajplan.data.tokens import Discretizer
from trajplan.errors import TrajplanError
from trajplan.model.actor import Actor, load_actor, save_actor
from trajplan.model.decoding import forward_cached, forward_shared, new_cache
from trajplan.model.gpt import TrajectoryGPT
from trajplan.planner import (
    Planner,
    beam_scores,
    cdf_filter,
    draw,
    expectation,
    sample_token,
    top_k_filter,
    uniforms_per_plan,
    window_start,
)
from trajplan.planner.candidates import FirstAction
from trajplan.planner.scorers import CriticScorer

OBS, ACT, N = 11, 3, 20  # Hopper's dimensions, few bins
D = OBS + ACT + 2
# conftest.tiny_model at Hopper's dims with large random weights; in float64 (.double()) its
# predictions are peaked and position-dependent, and modes can be compared token for token
RANDOM_MODEL = dict(obs_dim=OBS, act_dim=ACT, vocab_size=N, n_embd=32, noise=0.3)


pytestmark = pytest.mark.usefixtures("one_thread")


def random_discretizer(seed: int = 0) -> Discretizer:
    rng = np.random.default_rng(seed)
    return Discretizer(np.sort(rng.normal(size=(N + 1, D)), axis=0), N)


@pytest.fixture(scope="module")
def trained(one_thread: None) -> tuple[TrajectoryGPT, Discretizer, np.ndarray]:
    """A tiny model fitted for a few hundred steps on real Hopper rollouts (float64).

    Returns (model, discretizer, observations seen in the data [n, OBS]).
    """
    from trajplan.envs.registry import make_env

    env = make_env("hopper")
    rows, obs_all = [], []
    for ep in range(6):
        obs, _ = env.reset(seed=ep)
        env.action_space.seed(ep)
        trans = []
        for _ in range(40):
            act = env.action_space.sample()
            nxt, rew, term, trunc, _ = env.step(act)
            trans.append(np.concatenate([obs, act, [rew, 0.0]]))
            obs_all.append(obs)
            obs = nxt
            if term or trunc:
                break
        tr = np.array(trans)
        for t in range(len(tr) - 2, -1, -1):  # value = discounted sum of later rewards
            tr[t, -1] = tr[t + 1, -2] + 0.99 * tr[t + 1, -1]
        rows.append(tr)
    env.close()
    disc = Discretizer.fit(np.concatenate(rows), N)
    L = 4
    windows = []
    for tr in rows:
        tok = disc.discretize(tr)
        for i in range(len(tok) - L + 1):
            windows.append(tok[i : i + L].reshape(-1))
    data = torch.as_tensor(np.array(windows))
    model = tiny_model(0, obs_dim=OBS, act_dim=ACT, vocab_size=N, n_embd=32, transitions=L)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = data[torch.randint(len(data), (32,), generator=gen)]
        _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 2.5  # well below uniform guessing (ln 21 ~ 3.0)
    return model.double().eval(), disc, np.array(obs_all)


# -- sampling by hand ------------------------------------------------------------------------


def test_cdf_filter_hand_cases() -> None:
    probs = torch.tensor([[0.3, 0.1, 0.4, 0.2]], dtype=torch.float64)
    logits = probs.log()
    # ascending 0.1 0.2 0.3 0.4, running sums 0.1 0.3 0.6(+eps) 1.0: last below 0.6 is 0.2
    out = cdf_filter(logits, probs, 0.6)
    assert out[0].tolist() == pytest.approx([math.log(0.3), -1000, math.log(0.4), -1000])
    # nothing below 0.05: p* is the smallest probability, only that token goes
    out = cdf_filter(logits, probs, 0.05)
    assert out[0, 1] == -1000 and (out[0, [0, 2, 3]] == logits[0, [0, 2, 3]]).all()
    # 0.95: sums below it are 0.1 0.3 0.6 -> p* = 0.3, only 0.4 survives
    out = cdf_filter(logits, probs, 0.95)
    assert (out[0] == -1000).tolist() == [True, True, False, True]


def test_top_k_keeps_ties_of_the_kth() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0]])
    assert top_k_filter(logits, 1)[0].isinf().tolist() == [True, False, True, False]
    assert top_k_filter(logits, 3)[0].isinf().tolist() == [True, False, False, False]


def test_draw_inverse_cdf_never_picks_zero_probability() -> None:
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5]] * 5)
    u = torch.tensor([0.0, 0.25, 0.4999, 0.5, 0.999999])
    assert draw(probs, u).tolist() == [1, 1, 1, 3, 3]
    # frequencies of many draws follow the probabilities
    p = torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    freq = torch.bincount(draw(p.expand(20000, 3), u), minlength=3).double() / 20000
    assert torch.allclose(freq, p, atol=0.01)


def test_greedy_breaks_exact_ties_at_random_and_returns_raw_probs() -> None:
    logits = torch.tensor([[1.0, 5.0, 5.0, 2.0]] * 2)
    tok, probs = sample_token(logits, torch.tensor([0.2, 0.7]), k=1)
    assert tok.tolist() == [1, 2]
    assert torch.allclose(probs, torch.softmax(logits, -1))
    # cdf 0.1 drops the two small tokens (p 0.009, 0.024), top-2 keeps both 5s
    tok, _ = sample_token(logits, torch.tensor([0.0, 0.99]), k=2, cdf=0.1)
    assert tok.tolist() == [1, 2]


def test_beam_scores_by_hand() -> None:
    rewards = torch.tensor([[1.0, 2.0, 10.0, 0.0], [0.5, 0.0, 0.0, 0.0]], dtype=torch.float64)
    # step t=1 of a 3-step plan: r0 + g r1 + g^2 V1; a beam at t=0: r0 + g V0 (V0 = 0 here)
    assert beam_scores(rewards, 0.9).tolist() == pytest.approx([1 + 0.9 * 2 + 0.81 * 10, 0.5])


def test_expectation_by_hand() -> None:
    p = torch.tensor([[0.25, 0.25, 0.5], [0.0, 1.0, 0.0]])
    mids = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    assert expectation(p, mids).tolist() == pytest.approx([1.25, 1.0])
    assert expectation(p * 0.8, mids).tolist() == pytest.approx([1.0, 0.8])  # not renormalised


def test_window_start_halfcheetah_numbers() -> None:
    d = 25  # HalfCheetah: 5 context transitions + the observation are 142 tokens
    w = 5 * d - 1  # 124
    s = window_start(5 * d + 17, w, d)
    assert (s, 5 * d + 17 - s) == (25, 117)  # the model sees 4 past transitions
    assert window_start(3 * d + 17, w, d) == 0  # fits: no crop
    assert window_start(6 * d - 1, w, d) == 25 and window_start(6 * d, w, d) == 50  # slides


# -- the search ------------------------------------------------------------------------------


def play(model, disc, cfg, obs, rew, seeds, drop_at=None, scorer=None):
    """Run a planner over given observations obs [T, E, o] and rewards [T, E].

    Returns per step the plan tokens [E, H, D], plan values and actions, all as numpy.
    drop_at = (step, episode): that episode ends after that step.
    """
    planner = Planner(model, disc, cfg, scorer=scorer)
    planner.reset(len(seeds), seeds)
    alive = np.arange(len(seeds))
    out = []
    for t in range(len(obs)):
        act = planner.act(obs[t, alive])
        out.append((planner.plan.tokens.numpy().copy(), planner.plan.value.numpy().copy(), act))
        planner.observe(obs[t, alive], act, rew[t, alive])
        if drop_at is not None and t == drop_at[0]:
            keep = alive != drop_at[1]
            planner.drop(keep)
            alive = alive[keep]
    return out


def episode_data(steps: int, n_env: int, seed: int = 0, pool: np.ndarray | None = None):
    rng = np.random.default_rng(seed)
    if pool is None:
        obs = rng.normal(size=(steps, n_env, OBS))
    else:
        obs = pool[rng.integers(len(pool), size=(steps, n_env))]
    return obs, rng.normal(size=(steps, n_env))


CONFIGS = [
    # defaults of the method (cdf 0.6 on actions), context 3: the window slides every step
    PlanConfig(horizon=4, beam_width=4, n_expand=2, max_context_transitions=3),
    # top-k actions, 3x expansion, context 2 and horizon 5: later windows hold no context
    PlanConfig(
        horizon=5, beam_width=3, n_expand=3, k_act=4, cdf_act=None, max_context_transitions=2
    ),
    # replanning every 2 steps, a long context window, sampled observations
    PlanConfig(
        horizon=3,
        beam_width=5,
        n_expand=2,
        plan_freq=2,
        max_context_transitions=6,
        k_obs=3,
        cdf_obs=0.9,
    ),
]


def assert_same_plans(fast: list, ref: list) -> None:
    """Two `play` outputs step for step: the same plan tokens and actions, the same values."""
    for (tf, vf, af), (tr, vr, ar) in zip(fast, ref, strict=True):
        assert (tf == tr).all()
        assert vf == pytest.approx(vr, abs=1e-9)
        assert (af == ar).all()


@pytest.mark.parametrize("cfg", CONFIGS, ids=["slide", "topk-nocontext", "freq2-sampled-obs"])
def test_cached_and_full_equal_the_reference_random_model(cfg: PlanConfig) -> None:
    model, disc = tiny_model(0, transitions=10, **RANDOM_MODEL).double(), random_discretizer()
    obs, rew = episode_data(8, 1)
    full = play(model, disc, dataclasses.replace(cfg, mode="full"), obs, rew, [3])
    cached = play(model, disc, cfg, obs, rew, [3])
    with reference_planner():
        ref = play(model, disc, cfg, obs, rew, [3])
    assert_same_plans(full, ref)
    assert_same_plans(cached, ref)
    # the search really explored: every new plan differs from the others
    assert len({f[0].tobytes() for f in ref}) == len(ref) // cfg.plan_freq


@pytest.mark.parametrize("horizon", [2, 4])
def test_grow_window_cached_and_full_equal_the_reference_and_differ_from_slide(
    horizon: int,
) -> None:
    """The "grow" window keeps the plan's start and slides only past the block (63 tokens)."""
    model, disc = tiny_model(6, transitions=4, **RANDOM_MODEL).double(), random_discretizer(6)
    cfg = PlanConfig(horizon=horizon, beam_width=4, n_expand=2, max_context_transitions=2,
                     window="grow")  # fmt: skip
    obs, rew = episode_data(5, 1, seed=7)
    full = play(model, disc, dataclasses.replace(cfg, mode="full"), obs, rew, [1])
    cached = play(model, disc, cfg, obs, rew, [1])
    with reference_planner():
        ref = play(model, disc, cfg, obs, rew, [1])
    assert_same_plans(full, ref)
    assert_same_plans(cached, ref)
    slide = play(model, disc, dataclasses.replace(cfg, window="slide"), obs, rew, [1])
    assert any((g[0] != s[0]).any() for g, s in zip(cached, slide, strict=True))


def test_cached_and_full_equal_the_reference_trained_model(trained) -> None:
    model, disc, pool = trained
    cfg = PlanConfig(horizon=4, beam_width=6, n_expand=2, max_context_transitions=3)
    obs, rew = episode_data(6, 1, seed=1, pool=pool)
    full = play(model, disc, dataclasses.replace(cfg, mode="full"), obs, rew, [0])
    cached = play(model, disc, cfg, obs, rew, [0])
    with reference_planner():
        ref = play(model, disc, cfg, obs, rew, [0])
    assert_same_plans(full, ref)
    assert_same_plans(cached, ref)


def test_batched_episodes_equal_separate_ones_and_the_reference() -> None:
    """Batched, with an episode dropped, and alone: all the reference's plans (which plans
    one episode at a time)."""
    model, disc = tiny_model(1, transitions=10, **RANDOM_MODEL).double(), random_discretizer(1)
    cfg = PlanConfig(horizon=3, beam_width=4, n_expand=2, max_context_transitions=3)
    obs, rew = episode_data(6, 3, seed=2)
    seeds = [10, 11, 12]
    together = play(model, disc, cfg, obs, rew, seeds, drop_at=(2, 1))  # episode 1 ends early
    with reference_planner():
        ref = play(model, disc, cfg, obs, rew, seeds, drop_at=(2, 1))
    assert_same_plans(together, ref)
    for e, seed in enumerate(seeds):
        alone = play(model, disc, cfg, obs[:, e : e + 1], rew[:, e : e + 1], [seed])
        for t, (tok, val, act) in enumerate(alone):
            if e == 1 and t > 2:
                break
            row = e if t <= 2 or e == 0 else e - 1  # rows after the drop
            assert (ref[t][0][row] == tok[0]).all()
            assert (ref[t][2][row] == act[0]).all()
            assert ref[t][1][row] == pytest.approx(val[0], abs=1e-9)
    # different seeds explore differently
    assert not (together[0][0][0] == together[0][0][2]).all()


def test_plan_value_is_the_hand_computed_score_of_the_best_beam() -> None:
    model, disc = tiny_model(2, transitions=10, **RANDOM_MODEL).double(), random_discretizer(2)
    cfg = PlanConfig(horizon=3, beam_width=4, n_expand=2, max_context_transitions=3, discount=0.9)
    obs, rew = episode_data(4, 1, seed=3)
    planner = Planner(model, disc, cfg)
    planner.reset(1, [7])
    for t in range(4):  # grow a full context, then check the last plan
        context = planner.context[0].reshape(-1)
        act = planner.act(obs[t])
        planner.observe(obs[t], act, rew[t])
    seq = torch.cat([context, planner.plan.tokens[0].reshape(-1)])  # [nctx*D + H*D]
    mids = torch.as_tensor(disc.midpoints())
    window = 3 * D - 1
    expected = []
    for pos in range(len(context), len(seq), D):  # each planned transition
        for k, col in ((OBS + ACT, D - 2), (OBS + ACT + 1, D - 1)):  # reward, value tokens
            end = pos + k  # predict token `end` from the window before it
            s = window_start(end, window, D)
            with torch.inference_mode():
                logits, _ = model(seq[None, s:end])
            probs = torch.softmax(logits[0, -1], -1)
            # the reference: the expectation, stop dropped, not renormalised
            expected.append(float(probs[:N].double() @ mids[:, col].double()))
    r, v = expected[0::2], expected[1::2]
    score = sum(0.9**i * ri for i, ri in enumerate(r)) + 0.9 ** len(r) * v[-1]
    assert float(planner.plan.value[0]) == pytest.approx(score, rel=1e-12)
    assert planner.n_plans == 4 and planner.ms_per_plan > 0


def test_actions_context_and_plan_freq() -> None:
    model, disc = tiny_model(3, transitions=10, **RANDOM_MODEL).double(), random_discretizer(3)
    cfg = PlanConfig(horizon=3, beam_width=3, n_expand=2, max_context_transitions=2, plan_freq=2)
    planner = Planner(model, disc, cfg)
    planner.reset(1, [0])
    obs, rew = episode_data(5, 1, seed=4)
    for t in range(5):
        act = planner.act(obs[t])
        row = t % 2
        act_tok = planner.plan.tokens[0, row, OBS : OBS + ACT].numpy()
        assert np.array_equal(act[0], disc.reconstruct(act_tok, dims=slice(OBS, OBS + ACT)))
        planner.observe(obs[t], act, rew[t])
        last = planner.context[0, -1].numpy()
        assert np.array_equal(last[:OBS], disc.discretize(obs[t, 0], dims=slice(0, OBS)))
        assert np.array_equal(last[OBS : OBS + ACT], np.minimum(act_tok, N - 1))  # re-tokenizes
        assert last[-1] == N - 1  # the value placeholder 1e6 clips to the top bin
    assert planner.context.shape == (1, 2, D)  # keeps max_context_transitions
    assert planner.n_plans == 3  # steps 0, 2, 4


def test_same_seed_same_actions_other_seed_other_actions() -> None:
    model, disc = tiny_model(4, transitions=10, **RANDOM_MODEL).double(), random_discretizer(4)
    cfg = PlanConfig(horizon=2, beam_width=4, n_expand=2, max_context_transitions=2)
    obs, rew = episode_data(3, 1, seed=5)
    a = play(model, disc, cfg, obs, rew, [1])
    b = play(model, disc, cfg, obs, rew, [1])
    c = play(model, disc, cfg, obs, rew, [2])
    assert all((x[0] == y[0]).all() for x, y in zip(a, b, strict=True))
    assert any((x[0] != y[0]).any() for x, y in zip(a, c, strict=True))


def test_uniform_count_matches_the_search() -> None:
    cfg = PlanConfig(horizon=5, beam_width=32, n_expand=2)
    # HalfCheetah: 5 x 64 x (6 + 2) action/reward/value draws + 4 x 32 x 17 observation draws
    assert uniforms_per_plan(cfg, 17, 6) == 5 * 64 * 8 + 4 * 32 * 17


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"beam_width": 0}, "beam_width must be at least 1"),
        ({"horizon": 0}, "horizon must be at least 1"),
        ({"n_expand": 0}, "n_expand must be at least 1"),
        ({"mode": "fast"}, "unknown plan mode"),
        ({"window": "wide"}, "unknown plan window"),
        ({"cdf_act": 1.5}, "cdf_act must be in"),
        ({"cdf_act": 0.0}, "cdf_act must be in"),
        ({"k_act": 0}, "k_act must be between 1 and 21"),
        ({"k_obs": 22}, "k_obs must be between 1 and 21"),
        ({"plan_freq": 5, "horizon": 4}, "cannot exceed the horizon"),
        ({"discount": 1.5}, "discount must be in"),
        ({"max_context_transitions": 1, "horizon": 2}, "holds less than one transition"),
        ({"max_context_transitions": 0}, "max_context_transitions must be at least 1"),
    ],
)
def test_invalid_plan_options_are_clear_errors(change: dict, message: str) -> None:
    cfg = dataclasses.replace(PlanConfig(horizon=4, beam_width=4), **change)
    with pytest.raises(TrajplanError, match=message):
        Planner(tiny_model(0, transitions=10, **RANDOM_MODEL).double(), random_discretizer(), cfg)


def test_long_horizons_and_one_step_context_are_valid() -> None:
    """The window slides, so a horizon past the trained block is fine (the reference too)."""
    model, disc = tiny_model(0, transitions=3, **RANDOM_MODEL).double(), random_discretizer()
    cfg = PlanConfig(horizon=6, beam_width=2, n_expand=1, max_context_transitions=8)
    planner = Planner(model, disc, cfg)  # context capped by the 3-transition block
    obs, rew = episode_data(2, 1)
    for t in range(2):
        planner.observe(obs[t], planner.act(obs[t]), rew[t])
    assert planner.plan.tokens.shape == (1, 6, D)
    one = Planner(model, disc, dataclasses.replace(cfg, horizon=1, max_context_transitions=1))
    for t in range(2):  # the window holds the observation and the planned tokens only
        one.observe(obs[t], one.act(obs[t]), rew[t])
    assert one.context.shape == (1, 1, D)


def test_mismatched_discretizer_and_observations_are_errors() -> None:
    model = tiny_model(0, transitions=10, **RANDOM_MODEL).double()
    wrong = Discretizer(np.sort(np.random.default_rng(0).normal(size=(N + 1, D + 1)), 0), N)
    with pytest.raises(TrajplanError, match="does not match the model"):
        Planner(model, wrong, PlanConfig(horizon=2, beam_width=2))
    planner = Planner(model, random_discretizer(), PlanConfig(horizon=2, beam_width=2))
    planner.reset(2, [0, 1])
    with pytest.raises(TrajplanError, match=r"shape \(2, 11\)"):
        planner.act(np.zeros((2, OBS + 1)))
    with pytest.raises(TrajplanError, match="2 seeds for 3 episodes"):
        planner.reset(3, [0, 1])


def test_forward_shared_equals_full_forward_with_copied_prefix() -> None:
    """The model's shared-prefix path (the planner's context) gives the full forward's logits."""
    model = tiny_model(5, transitions=10, **RANDOM_MODEL).double()
    gen = torch.Generator().manual_seed(0)
    ctx = torch.randint(0, N + 1, (2, 2 * D + 3), generator=gen)  # 2 episodes
    own = torch.randint(0, N + 1, (6, 9), generator=gen)  # 3 rows each, episode-major
    with torch.inference_mode():
        full, _ = model(torch.cat([ctx.repeat_interleave(3, 0), own], 1))
        prefix = new_cache(model, 2)
        forward_cached(model, ctx, prefix)
        cache = new_cache(model, 6, 20)
        parts = [forward_shared(model, own[:, :4], prefix, cache)]
        parts += [forward_shared(model, own[:, i : i + 1], prefix, cache) for i in range(4, 9)]
        last = forward_shared(model, own[:, :1], prefix, new_cache(model, 6, 4), last_only=True)
    assert torch.allclose(torch.cat(parts, 1), full[:, ctx.shape[1] :], atol=1e-12)
    assert torch.allclose(last[:, 0], full[:, ctx.shape[1]], atol=1e-12)


@pytest.fixture(scope="module")
def prior_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random tanh MLP actor with Hopper's dimensions, saved as a real actor file."""
    actor = random_actor(OBS, ACT)
    return str(save_actor(actor, tmp_path_factory.mktemp("prior") / "p.actor.safetensors"))


def quantized_action(actor: Actor, disc: Discretizer, obs: np.ndarray) -> np.ndarray:
    """The actor's action for obs [E, o] through the action bins' midpoints, [E, a]."""
    dims = slice(OBS, OBS + ACT)
    return disc.reconstruct(disc.discretize(actor.act(obs).astype(np.float64), dims=dims), dims)


def test_prior_alone_acts_as_the_prior_quantized(prior_file: str) -> None:
    """prior_share 1, no noise: every candidate is the prior's action, so the planner
    executes the prior's action for the real observation, through bin midpoints."""
    model, disc = tiny_model(2, transitions=10, **RANDOM_MODEL).double(), random_discretizer(2)
    cfg = PlanConfig(horizon=3, beam_width=4, n_expand=2, max_context_transitions=3,
                     prior=prior_file, prior_share=1.0, prior_noise=0.0)  # fmt: skip
    obs, rew = episode_data(4, 2, seed=3)
    planner = Planner(model, disc, cfg)
    planner.reset(2, [0, 1])
    actor = load_actor(prior_file)
    for t in range(4):
        act = planner.act(obs[t])
        assert np.array_equal(act, quantized_action(actor, disc, obs[t]))
        assert planner.predictions()[2].all()  # the plan's first action is the prior's
        planner.observe(obs[t], act, rew[t])


def test_prior_mixes_candidates_exactly_in_both_window_modes(prior_file: str) -> None:
    """Half the rows from a noisy prior: cached == full == the reference, batched == alone,
    same seed same plan; the prior changes the plans, and the planner counts its draws (m
    per row)."""
    model, disc = tiny_model(3, transitions=10, **RANDOM_MODEL).double(), random_discretizer(3)
    cfg = PlanConfig(horizon=3, beam_width=4, n_expand=2, max_context_transitions=3,
                     prior=prior_file, prior_share=0.5, prior_noise=0.3)  # fmt: skip
    obs, rew = episode_data(6, 2, seed=4)
    cached = play(model, disc, cfg, obs, rew, [5, 6])
    full = play(model, disc, dataclasses.replace(cfg, mode="full"), obs, rew, [5, 6])
    with reference_planner():
        ref = play(model, disc, cfg, obs, rew, [5, 6])
    assert_same_plans(cached, ref)
    assert_same_plans(full, ref)
    alone = play(model, disc, cfg, obs[:, 1:], rew[:, 1:], [6])
    assert all((c[2][1] == a[2][0]).all() for c, a in zip(cached, alone, strict=True))
    plain = play(model, disc, dataclasses.replace(cfg, prior=None), obs, rew, [5, 6])
    assert any((p[0] != c[0]).any() for p, c in zip(plain, cached, strict=True))
    m = round(0.5 * 8)  # prior rows of the 2 x 4 expanded rows
    assert Planner(model, disc, cfg).n_uniforms == (uniforms_per_plan(cfg, OBS, ACT) + 3 * m * ACT)


def test_bad_priors_are_clear_errors(prior_file: str, tmp_path) -> None:
    model, disc = tiny_model(0, transitions=10, **RANDOM_MODEL).double(), random_discretizer()
    base = PlanConfig(horizon=2, beam_width=2, max_context_transitions=3)
    with pytest.raises(TrajplanError, match="not found"):
        Planner(model, disc, dataclasses.replace(base, prior=str(tmp_path / "nope")))
    with pytest.raises(TrajplanError, match="holds no policy.actor.safetensors"):
        Planner(model, disc, dataclasses.replace(base, prior=str(tmp_path)))
    for change, message in [({"prior_share": 0.0}, "prior_share must be in"),
                            ({"prior_noise": -0.1}, "prior_noise must be >= 0")]:  # fmt: skip
        with pytest.raises(TrajplanError, match=message):
            Planner(model, disc, dataclasses.replace(base, prior=prior_file, **change))
    other = load_actor(prior_file)
    other.weights[0] = np.zeros((16, OBS + 1), np.float32)  # an actor for another env
    path = save_actor(other, tmp_path / "other.actor.safetensors")
    with pytest.raises(TrajplanError, match="acts on 12 observation"):
        Planner(model, disc, dataclasses.replace(base, prior=str(path)))


def test_ranking_diagnostic_scores_a_candidate_as_the_planner_does(prior_file: str) -> None:
    """scripts/diag_ranking.py scores "take this action, then follow the prior" with the
    planner's own rules: for the prior's own action, its score is the plan value of a
    search whose every candidate is the prior's (share 1, no noise). Its rank correlation
    is Spearman's (known values, ties at their mean rank)."""
    import importlib.util
    from pathlib import Path
    from types import SimpleNamespace

    path = Path(__file__).parents[1] / "scripts" / "diag_ranking.py"
    spec = importlib.util.spec_from_file_location("diag_ranking", path)
    diag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diag)
    assert diag.ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]
    assert diag.spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0])) == 0.5
    assert diag.spearman(np.ones(3), np.arange(3.0)) is None

    model, disc = tiny_model(8, transitions=10, **RANDOM_MODEL).double(), random_discretizer(8)
    cfg = PlanConfig(horizon=3, beam_width=2, n_expand=1, max_context_transitions=3,
                     prior=prior_file, prior_share=1.0, prior_noise=0.0)  # fmt: skip
    obs, rew = episode_data(3, 1, seed=9)
    actor = load_actor(prior_file)
    planner = Planner(model, disc, cfg)
    planner.reset(1, [0])
    ckpt = SimpleNamespace(model=model, discretizer=disc)
    for t in range(3):
        act = planner.act(obs[t])
        obs_tok = torch.as_tensor(disc.discretize(obs[t], dims=slice(0, OBS)))  # [1, o]
        ctx = torch.cat([planner.context.flatten(1), obs_tok], 1)
        own = disc.discretize(actor.act(obs[t]).astype(np.float64), dims=slice(OBS, OBS + ACT))
        other = (own + 3) % N  # another candidate: scored too, differently
        cand = torch.as_tensor(np.concatenate([own, other]))  # [2, a]
        score, r0 = diag.model_scores(ckpt, actor, cfg, ctx, obs[t, 0], cand)
        assert r0[0] == pytest.approx(float(planner.plan.rewards[0, 0]), abs=1e-9)
        assert score[0] == pytest.approx(float(planner.plan.value[0]), abs=1e-9)
        assert score[1] != pytest.approx(score[0])
        planner.observe(obs[t], act, rew[t])


def test_search_from_a_given_first_action() -> None:
    """The FirstAction candidate source: every episode's plan starts with its given action
    and the rest is searched; cached == full == the reference, and an episode planned in a
    batch equals it alone."""
    from trajplan.planner import Uniforms, beam_search, plan_window
    from trajplan.planner.reference import reference_beam_search

    model, disc = tiny_model(9, transitions=10, **RANDOM_MODEL).double(), random_discretizer(9)
    cfg = PlanConfig(horizon=3, beam_width=4, n_expand=2, max_context_transitions=3)
    gen = torch.Generator().manual_seed(1)
    ctx = torch.randint(0, N, (1, OBS)).repeat(3, 1)  # 3 episodes, the same observation
    first = torch.randint(0, N, (3, ACT), generator=gen)  # [E, a]
    mids = torch.as_tensor(disc.midpoints())
    n_u = uniforms_per_plan(cfg, OBS, ACT)

    def plan(c, f, seeds, mode="cached"):
        u = Uniforms([torch.Generator().manual_seed(s) for s in seeds], n_u, "cpu")
        cfg_m = dataclasses.replace(cfg, mode=mode)
        with torch.inference_mode():
            obs = torch.zeros(c.shape[0], OBS, dtype=torch.float64)  # unused by FirstAction
            if mode == "reference":  # one source per episode: it begins once per episode
                return [
                    reference_beam_search(model, c[e : e + 1], cfg, mids, Uniforms([g], n_u, "cpu"),
                                          source=FirstAction(f[e : e + 1]), obs=obs[:1])
                    for e, g in enumerate(torch.Generator().manual_seed(s) for s in seeds)
                ]  # fmt: skip
            window = plan_window(model, cfg_m)
            return beam_search(model, c, cfg_m, mids, u, window, source=FirstAction(f), obs=obs)

    res = plan(ctx, first, [0, 1, 2])
    assert torch.equal(res.tokens[:, 0, OBS : OBS + ACT], first) and res.from_source.all()
    full = plan(ctx, first, [0, 1, 2], mode="full")
    ref = plan(ctx, first, [0, 1, 2], mode="reference")
    for e, r in enumerate(ref):
        for x in (res, full):
            assert torch.equal(x.tokens[e], r.tokens[0]) and bool(x.from_source[e])
            assert torch.allclose(x.value[e], r.value[0], atol=1e-9)
    alone = plan(ctx[1:2], first[1:2], [1])
    assert torch.equal(alone.tokens[0], res.tokens[1])
    assert float(alone.value[0]) == pytest.approx(float(res.value[1]), abs=1e-9)


# -- TT + Q: a critic scores the beams ------------------------------------------------------


def test_critic_scores_by_hand() -> None:
    """ "q": sum_{i<t} gamma^i r_i + gamma^t Q(s_t, a_t); "v": the same with V(s_t); the
    model's value token (column t+1) and its reward at t are not used."""

    class Known:
        obs_dim, act_dim = 1, 1

        def q(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
            return obs[:, 0] + 2 * act[:, 0]

        def v(self, obs: torch.Tensor) -> torch.Tensor:
            return 3 * obs[:, 0]

    rewards = torch.tensor([[1.0, 2.0, 4.0, 99.0], [0.0, 1.0, 8.0, 99.0]], dtype=torch.float64)
    obs = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    act = torch.tensor([[0.5], [-1.0]], dtype=torch.float64)
    q = CriticScorer(Known(), 0.5).score(rewards, 2, obs, act)
    assert q.tolist() == pytest.approx([1 + 0.5 * 2 + 0.25 * 2.0, 0 + 0.5 + 0.25 * 0.0])
    assert CriticScorer(Known(), 0.9).score(rewards, 0, obs, act).tolist() == [2.0, 0.0]


def test_critic_search_is_exact_in_both_modes_and_batches() -> None:
    """With a critic: cached == full == the reference, batched == alone, same seed same
    plan; the plans differ from TT's value search, and the plan value is the critic's score
    of the best beam's last planned state and action."""
    model = tiny_model(4, transitions=10, **RANDOM_MODEL).double()
    disc = random_discretizer(4)
    cfg = PlanConfig(horizon=3, beam_width=4, n_expand=2, max_context_transitions=3,
                     critic="(a loaded critic)")  # fmt: skip
    scorer = CriticScorer(SmallCritic(1, OBS, ACT), cfg.discount)
    obs, rew = episode_data(5, 2, seed=6)
    cached = play(model, disc, cfg, obs, rew, [7, 8], scorer=scorer)
    full = play(model, disc, dataclasses.replace(cfg, mode="full"), obs, rew, [7, 8],
                scorer=scorer)  # fmt: skip
    with reference_planner():
        ref = play(model, disc, cfg, obs, rew, [7, 8], scorer=scorer)
    assert_same_plans(cached, ref)
    assert_same_plans(full, ref)
    alone = play(model, disc, cfg, obs[:, 1:], rew[:, 1:], [8], scorer=scorer)
    assert all((c[2][1] == a[2][0]).all() for c, a in zip(cached, alone, strict=True))
    tt = play(model, disc, dataclasses.replace(cfg, critic=None), obs, rew, [7, 8])
    assert any((p[0] != c[0]).any() for p, c in zip(tt, cached, strict=True))
    # the reported value, recomputed from the best plan's tokens
    planner = Planner(model, disc, cfg, scorer=scorer)
    planner.reset(1, [3])
    planner.act(obs[0, :1])
    plan = planner.plan
    mids = torch.as_tensor(disc.midpoints())
    last = plan.tokens[0, -1]  # [D]: the last planned transition
    s_t = mids[last[:OBS].clamp_max(N - 1), torch.arange(OBS)]
    a_t = mids[last[OBS : OBS + ACT].clamp_max(N - 1), torch.arange(OBS, OBS + ACT)]
    r = plan.rewards[0, : cfg.horizon - 1]
    disc_r = float(sum(cfg.discount**i * float(x) for i, x in enumerate(r)))
    s_t, a_t = s_t.float()[None], a_t.float()[None]
    with torch.no_grad():
        tail = scorer.critic.q(s_t, a_t)
    expected = disc_r + cfg.discount ** (cfg.horizon - 1) * float(tail[0])
    assert float(plan.value[0]) == pytest.approx(expected, rel=1e-5)  # a float32 critic


def test_a_critic_config_without_its_critic_is_a_clear_error() -> None:
    model, disc = tiny_model(0, transitions=4, **RANDOM_MODEL).double(), random_discretizer(0)
    with pytest.raises(TrajplanError, match="plan.critic: the critic is loaded with its run"):
        Planner(model, disc, PlanConfig(horizon=2, beam_width=2, critic="x"))
