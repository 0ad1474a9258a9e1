"""Every fast path of `beam_search` against the plain transcription of the paper's search
(`trajplan.planner.reference`): the same plan tokens, scores, predicted rewards and
candidate flags, on tiny random models, with contexts that make the window slide.

Also `reference_planner`, which makes a `Planner` plan with the reference instead (the
other planner tests run their multi-step episodes through both).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from conftest import SmallCritic, random_actor, tiny_model

from trajplan.config import PlanConfig
from trajplan.data.tokens import Discretizer
from trajplan.planner import Uniforms, beam_search, plan_window, uniforms_per_plan
from trajplan.planner.candidates import FirstAction
from trajplan.planner.prior import PriorCandidates, PriorProposals, prior_rows
from trajplan.planner.reference import reference_beam_search
from trajplan.planner.scorers import CriticScorer, LikelihoodScorer

pytestmark = pytest.mark.usefixtures("one_thread")

OBS, ACT, N = 4, 2, 10
D = OBS + ACT + 2


def as_beam_search(model, ctx, cfg, mids, uniforms, window, pool=None, source=None, obs=None,
                   scorer=None, goal=None):  # fmt: skip
    """`reference_beam_search` behind `beam_search`'s signature (window and pool are the
    fast path's: the reference derives its window from cfg and the model)."""
    assert window == plan_window(model, cfg)
    return reference_beam_search(
        model, ctx, cfg, mids, uniforms, source=source, obs=obs, scorer=scorer, goal=goal
    )


@contextlib.contextmanager
def reference_planner() -> Iterator[None]:
    """Planners made or used inside plan with the reference search."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("trajplan.planner.planner.beam_search", as_beam_search)
        yield


def model_and_mids(seed: int = 0, **kw) -> tuple[torch.nn.Module, torch.Tensor]:
    """A random float64 model (peaked, position-dependent predictions; a block of 4
    transitions) and random bin midpoints [N, D]."""
    model = tiny_model(
        seed, obs_dim=OBS, act_dim=ACT, vocab_size=N, n_embd=32, noise=0.3, transitions=4, **kw
    ).double()
    return model, torch.as_tensor(discretizer(seed).midpoints())


def discretizer(seed: int = 0) -> Discretizer:
    rng = np.random.default_rng(seed)
    return Discretizer(np.sort(rng.normal(size=(N + 1, D)), axis=0), N)


def contexts(n_env: int, n_trans: int, seed: int = 0) -> torch.Tensor:
    """[E, n_trans*D + OBS] random tokens: context transitions, then the observation."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, N, (n_env, n_trans * D + OBS), generator=gen)


def search_both(model, ctx, cfg, mids, seeds, make_source=None, obs=None, scorer=None,
                goal=None):  # fmt: skip
    """The fast search (all episodes at once) and the reference, same seeds; both consume
    exactly the plan's uniforms. make_source(): a fresh candidate source for each."""
    extra = 0 if make_source is None else make_source().draws_per_step
    n_u = uniforms_per_plan(cfg, OBS, ACT, extra)
    out = []
    for search in (beam_search, as_beam_search):
        u = Uniforms([torch.Generator().manual_seed(s) for s in seeds], n_u, torch.device("cpu"))
        source = None if make_source is None else make_source()
        with torch.inference_mode():
            out.append(search(model, ctx, cfg, mids, u, plan_window(model, cfg), {}, source,
                              obs, scorer, goal))  # fmt: skip
        assert u.offset == n_u
    return out


def assert_same(fast, ref) -> None:
    assert torch.equal(fast.tokens, ref.tokens)
    assert torch.equal(fast.from_source, ref.from_source)
    torch.testing.assert_close(fast.value, ref.value, rtol=0, atol=1e-9)
    torch.testing.assert_close(fast.rewards, ref.rewards, rtol=0, atol=1e-9)


CONFIGS = {
    # the method's defaults (cdf 0.6 on actions), 3 context transitions: slides every step
    "slide": PlanConfig(horizon=4, beam_width=4, n_expand=2, max_context_transitions=3),
    # top-k actions, 3x expansion, context 2, horizon 5: later windows hold no context
    "topk-nocontext": PlanConfig(
        horizon=5, beam_width=3, n_expand=3, k_act=4, cdf_act=None, max_context_transitions=2
    ),  # fmt: skip
    # sampled observations, a window capped by the model's block (4 transitions)
    "sampled-block": PlanConfig(
        horizon=3, beam_width=5, n_expand=2, max_context_transitions=6, k_obs=3, cdf_obs=0.9
    ),  # fmt: skip
    # the "grow" window (documented, not the paper's): slides only past the block
    "grow": PlanConfig(
        horizon=4, beam_width=4, n_expand=2, max_context_transitions=2, window="grow"
    ),  # fmt: skip
}


@pytest.mark.parametrize("mode", ["cached", "full"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_cached_and_full_windows_equal_the_reference(name: str, mode: str) -> None:
    """One episode, contexts of 0, 2 and 4 transitions (no crop at the start, or a cropped
    start; the window slides while planning)."""
    model, mids = model_and_mids(0)
    cfg = dataclasses.replace(CONFIGS[name], mode=mode)
    plans = set()
    for n_trans in (0, 2, 4):
        fast, ref = search_both(model, contexts(1, n_trans, n_trans), cfg, mids, [n_trans])
        assert_same(fast, ref)
        plans.add(ref.tokens.numpy().tobytes())
    assert len(plans) == 3  # the search explored: every context gave another plan


@pytest.mark.parametrize("mode", ["cached", "full"])
def test_batched_episodes_equal_the_reference_one_at_a_time(mode: str) -> None:
    model, mids = model_and_mids(1)
    cfg = dataclasses.replace(CONFIGS["slide"], mode=mode)
    fast, ref = search_both(model, contexts(3, 3, seed=1), cfg, mids, [10, 11, 12])
    assert_same(fast, ref)
    assert not torch.equal(ref.tokens[0], ref.tokens[2])


def prior_source(share: float, noise: float, mids: torch.Tensor, cfg: PlanConfig):
    """A factory of prior candidate sources: a random tanh MLP actor."""
    actor = random_actor(OBS, ACT)
    m = prior_rows(share, cfg.n_expand * cfg.beam_width)
    proposals = PriorProposals(actor, discretizer(2), OBS, ACT, noise)
    return lambda: PriorCandidates(proposals, m, mids)


@pytest.mark.parametrize("mode", ["cached", "full"])
@pytest.mark.parametrize(("share", "noise"), [(0.5, 0.3), (1.0, 0.0)])
def test_prior_candidates_equal_the_reference(mode: str, share: float, noise: float) -> None:
    model, mids = model_and_mids(2)
    cfg = dataclasses.replace(CONFIGS["slide"], mode=mode)
    obs = torch.as_tensor(np.random.default_rng(2).normal(size=(2, OBS)))
    fast, ref = search_both(model, contexts(2, 3, seed=2), cfg, mids, [5, 6],
                            prior_source(share, noise, mids, cfg), obs)  # fmt: skip
    assert_same(fast, ref)
    if share == 1.0:
        assert ref.from_source.all()
    plain, _ = search_both(model, contexts(2, 3, seed=2), cfg, mids, [5, 6])
    assert not torch.equal(plain.tokens, ref.tokens)  # the prior changed the plans


def test_a_given_first_action_equals_the_reference() -> None:
    """FirstAction (scripts/diag_ranking.py's source), three episodes batched; the reference
    begins a source per episode, so it gets each episode's own."""
    model, mids = model_and_mids(3)
    cfg = CONFIGS["slide"]
    ctx = contexts(3, 2, seed=3)
    first = torch.randint(0, N, (3, ACT), generator=torch.Generator().manual_seed(3))
    obs = torch.zeros(3, OBS, dtype=torch.float64)
    n_u = uniforms_per_plan(cfg, OBS, ACT)
    with torch.inference_mode():
        u = Uniforms([torch.Generator().manual_seed(s) for s in range(3)], n_u, "cpu")
        fast = beam_search(model, ctx, cfg, mids, u, plan_window(model, cfg),
                           source=FirstAction(first), obs=obs)  # fmt: skip
        for e in range(3):
            u = Uniforms([torch.Generator().manual_seed(e)], n_u, "cpu")
            source = FirstAction(first[e : e + 1])
            ref = reference_beam_search(
                model, ctx[e : e + 1], cfg, mids, u, source=source, obs=obs[:1]
            )
            assert_same(fast.select(torch.tensor([e])), ref)
    assert torch.equal(fast.tokens[:, 0, OBS : OBS + ACT], first)


@pytest.mark.parametrize("mode", ["cached", "full"])
def test_critic_scorer_equals_the_reference(mode: str) -> None:
    """TT + Q: the reference decodes each row's last state and action from its own tokens
    (the real observation at t = 0)."""
    model, mids = model_and_mids(4)
    cfg = dataclasses.replace(CONFIGS["slide"], mode=mode)
    scorer = CriticScorer(SmallCritic(1, OBS, ACT), cfg.discount)
    obs = torch.as_tensor(np.random.default_rng(4).normal(size=(2, OBS)))
    fast, ref = search_both(model, contexts(2, 3, seed=4), cfg, mids, [7, 8], obs=obs,
                            scorer=scorer)  # fmt: skip
    assert_same(fast, ref)
    tt, _ = search_both(model, contexts(2, 3, seed=4), cfg, mids, [7, 8])
    assert not torch.equal(tt.tokens, ref.tokens)


@pytest.mark.parametrize("mode", ["cached", "full"])
@pytest.mark.parametrize("name", ["slide", "topk-nocontext", "sampled-block"])
def test_likelihood_objective_equals_the_reference(name: str, mode: str) -> None:
    """Imitation: log-likelihood scores, a repeated plan ranked last."""
    model, mids = model_and_mids(5)
    cfg = dataclasses.replace(CONFIGS[name], mode=mode, objective="likelihood")
    fast, ref = search_both(model, contexts(2, 3, seed=5), cfg, mids, [1, 2],
                            scorer=LikelihoodScorer())  # fmt: skip
    assert_same(fast, ref)
    assert (ref.value < 0).all()


@pytest.mark.parametrize("mode", ["cached", "full"])
@pytest.mark.parametrize("objective", ["return", "likelihood"])
def test_goal_equals_the_reference(mode: str, objective: str) -> None:
    """A goal-conditioned model: the goal in front of every window, however it slides."""
    model, mids = model_and_mids(6, goal_dim=2)
    cfg = dataclasses.replace(CONFIGS["slide"], mode=mode, objective=objective)
    scorer = LikelihoodScorer() if objective == "likelihood" else None
    goal = torch.randint(0, N, (3, 2), generator=torch.Generator().manual_seed(6))
    ctx = contexts(3, 3, seed=6)
    fast, ref = search_both(model, ctx, cfg, mids, [3, 4, 5], scorer=scorer, goal=goal)
    assert_same(fast, ref)
    other, _ = search_both(model, ctx, cfg, mids, [3, 4, 5], scorer=scorer, goal=(goal + 3) % N)
    assert not torch.equal(other.tokens, ref.tokens)


@pytest.mark.xfail(reason="known: sampled value tokens (k_rew > 1) make exact score ties that "
                   "each path breaks by its rounding (docs/method.md, Planner)")  # fmt: skip
def test_sampled_reward_and_value_tokens_tie_break() -> None:
    """Two rows with the same action and reward tokens and different sampled value tokens
    score the same (the value token comes after both expectations); the cached window's
    scores differ from the reference's in the last bit, so top-B orders them otherwise and
    the plans part. With greedy reward and value tokens (k_rew 1, every shipped config),
    rows whose tokens differ tie only where the model's logits tie exactly."""
    model, mids = model_and_mids(0)
    cfg = dataclasses.replace(CONFIGS["sampled-block"], k_rew=2)
    fast, ref = search_both(model, contexts(1, 0, 0), cfg, mids, [0])
    assert_same(fast, ref)
