"""Imitation by likelihood planning (plan.objective: likelihood): the search ranks plans by
the model's log-likelihood of their action and observation tokens, never by rewards or
values; hand-computed plans on a model whose distributions are set by hand, the score
recomputed from a full forward pass, cached == full == the reference search, batched ==
alone, clear errors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import cli, one_line_error, tiny_model
from test_plan import (
    ACT,
    OBS,
    RANDOM_MODEL,
    D,
    assert_same_plans,
    episode_data,
    play,
    random_discretizer,
)
from test_reference_search import reference_planner

from trajplan.config import PlanConfig
from trajplan.data.tokens import Discretizer
from trajplan.errors import TrajplanError
from trajplan.planner import Planner, window_start
from trajplan.planner.scorers import CriticScorer, LikelihoodScorer, repeated_rows

pytestmark = pytest.mark.usefixtures("one_thread")

LIKELY = PlanConfig(horizon=3, beam_width=4, n_expand=2, max_context_transitions=3,
                    objective="likelihood")  # fmt: skip

# -- a Markov model set by hand ---------------------------------------------------------------
# One observation and one action dim, 3 bins: D = 4 tokens [o, a, r, v] per transition. The
# next token's distribution depends only on the current token (dim, bin). Row j of a table is
# the distribution after bin j; column 3 is the stop token (never drawn).
ACT_AFTER_OBS = [[0.5, 0.3, 0.2], [0.9, 0.05, 0.05], [1 / 3, 1 / 3, 1 / 3]]
OBS_AFTER_VALUE = [[0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1]]
SAME_BIN = np.eye(3).tolist()  # action j -> reward j -> value j, deterministic


def log_table(p: list[list[float]]) -> torch.Tensor:
    """Probabilities [3, 3] -> logits [3, 4]: log p, and -1000 for 0 and the stop token."""
    p = torch.tensor(p, dtype=torch.float64)
    logits = torch.where(p > 0, p.clamp_min(1e-300).log(), torch.tensor(-1000.0, dtype=p.dtype))
    return torch.cat([logits, torch.full((3, 1), -1000.0, dtype=p.dtype)], dim=1)


def markov_model() -> tuple[torch.nn.Module, Discretizer]:
    """A TrajectoryGPT whose next-token logits are the tables above, exactly: the blocks add
    nothing (zero output projections), no position embedding, one-hot token embeddings, and
    each head maps the final layer norm of its input token's embedding to the table row."""
    model = tiny_model(0, obs_dim=1, act_dim=1, vocab_size=3, transitions=6).double()
    C = model.cfg.n_embd
    with torch.no_grad():
        for block in model.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                proj.weight.zero_()
                proj.bias.zero_()
        model.pos_emb.zero_()
        model.tok_emb.weight.copy_(torch.eye(model.tok_emb.weight.shape[0], C))
        tables = [ACT_AFTER_OBS, SAME_BIN, SAME_BIN, OBS_AFTER_VALUE]  # head d: after dim d
        for d, table in enumerate(tables):
            y = model.ln_f(model.tok_emb.weight[d * 3 : d * 3 + 3])  # [3, C] the head's inputs
            model.head[d] = log_table(table).T @ torch.linalg.pinv(y.T)  # head @ y_j = row j
    edges = np.tile(np.arange(4.0)[:, None], (1, 4))  # bin j holds [j, j+1) in every dim
    return model.eval(), Discretizer(edges, 3)


def test_the_hand_set_model_predicts_its_tables() -> None:
    model, _ = markov_model()
    seq = torch.tensor([[0, 1, 1, 1, 2, 0, 0, 0]])  # o a r v o a r v
    with torch.inference_mode():
        logp = torch.log_softmax(model(seq)[0][0], -1)  # [8, 4]
    assert logp[0, :3].exp().tolist() == pytest.approx(ACT_AFTER_OBS[0], abs=1e-9)
    assert logp[1, 1].exp().item() == pytest.approx(1.0, abs=1e-9)  # reward = action's bin
    assert logp[3, :3].exp().tolist() == pytest.approx(OBS_AFTER_VALUE[1], abs=1e-9)
    assert logp[4, :3].exp().tolist() == pytest.approx(ACT_AFTER_OBS[2], abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_likelihood_search_finds_the_most_likely_plan_by_hand(seed: int) -> None:
    """From observation bin 0 over 2 steps, plans are (a0, a1) with the next observation
    the most likely one (greedy); p(plan) = p(a0 | o0) p(o1 | v0 = a0) p(a1 | o1):
        a0 = 0 (the likeliest first action): 0.5 * 0.6 (o1 = 2) * 1/3 = 0.100
        a0 = 1:                              0.3 * 0.8 (o1 = 1) * 0.9 = 0.216  <- best
        a0 = 2:                              0.2 * 0.7 (o1 = 0) * 0.5 = 0.070
    The return objective instead picks a0 = 2 (the largest reward and value bins)."""
    model, disc = markov_model()
    cfg = PlanConfig(horizon=2, beam_width=4, n_expand=4, k_act=None, cdf_act=None,
                     max_context_transitions=3, objective="likelihood")  # fmt: skip
    planner = Planner(model, disc, cfg)
    planner.reset(1, [seed])
    act = planner.act(np.array([[0.5]]))
    assert planner.plan.tokens[0].tolist() == [[0, 1, 1, 1], [1, 0, 0, 0]]
    assert float(planner.plan.value[0]) == pytest.approx(math.log(0.3 * 0.8 * 0.9), abs=1e-9)
    assert act.tolist() == [[1.5]]  # bin 1's midpoint
    # what eval's diagnostics read: the chosen plan's predicted return, r0 + g r1 + g^2 V1
    expected = 1.5 + 0.99 * 0.5 + 0.99**2 * 0.5  # bins 1, 0, 0 (midpoints 1.5, 0.5, 0.5)
    assert planner.predictions().value.tolist() == pytest.approx([expected], abs=1e-9)


def test_repeated_plans_rank_last_so_the_beam_holds_distinct_plans() -> None:
    planned = torch.tensor([[1, 2], [1, 2], [0, 2], [1, 2], [1, 2], [3, 3]])  # 2 episodes
    assert repeated_rows(planned, 2).tolist() == [False, True, False, False, True, False]
    # with fewer distinct plans than beams the search still fills the beam (with repeats)
    model, disc = markov_model()
    cfg = PlanConfig(horizon=2, beam_width=8, n_expand=2, k_act=None, cdf_act=None,
                     objective="likelihood")  # fmt: skip
    planner = Planner(model, disc, cfg)
    planner.reset(1, [0])
    planner.act(np.array([[0.5]]))
    assert planner.plan.tokens[0].tolist() == [[0, 1, 1, 1], [1, 0, 0, 0]]


# -- the score is the log-likelihood of the plan's action and observation tokens --------------


def test_plan_value_is_the_log_likelihood_of_its_action_and_observation_tokens() -> None:
    """Recompute the best plan's score from full forward passes over the reference window:
    the sum of log softmax at every planned action and observation token (the plan's first
    observation, the real one, and every reward and value token excluded)."""
    model, disc = tiny_model(2, transitions=10, **RANDOM_MODEL).double(), random_discretizer(2)
    obs, rew = episode_data(4, 1, seed=3)
    planner = Planner(model, disc, LIKELY)
    planner.reset(1, [7])
    for t in range(4):  # grow a full context, then check the last plan
        context = planner.context[0].reshape(-1)
        act = planner.act(obs[t])
        planner.observe(obs[t], act, rew[t])
    seq = torch.cat([context, planner.plan.tokens[0].reshape(-1)])
    window = LIKELY.max_context_transitions * D - 1
    total = 0.0
    for pos in range(len(context) + OBS, len(seq)):  # every planned token after the first obs
        if pos % D >= OBS + ACT:  # reward and value tokens: not counted
            continue
        s = window_start(pos, window, D)
        with torch.inference_mode():
            logits, _ = model(seq[None, s:pos])
        total += float(torch.log_softmax(logits[0, -1], -1)[seq[pos]])
    assert float(planner.plan.value[0]) == pytest.approx(total, rel=1e-12)


def scaled_reward_and_value_heads(model: torch.nn.Module, factor: float) -> torch.nn.Module:
    """A copy whose reward and value logits are all `factor` times the original's: the
    same greedy tokens (a power of two scales exactly), other probabilities and expectations."""
    other = dataclasses.replace(model.cfg)
    copy = type(model)(other).double().eval()
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        copy.head[D - 3] *= factor  # input: the last action token -> predicts the reward
        copy.head[D - 2] *= factor  # input: the reward token -> predicts the value
    return copy


def test_likelihood_never_reads_reward_or_value_predictions() -> None:
    """Sharper reward and value heads change TT's return plans, not the likelihood plans
    (tokens, scores and actions equal at every step)."""
    model, disc = tiny_model(5, transitions=10, **RANDOM_MODEL).double(), random_discretizer(5)
    sharp = scaled_reward_and_value_heads(model, 4.0)
    obs, rew = episode_data(5, 2, seed=4)
    base = play(model, disc, LIKELY, obs, rew, [1, 2])
    other = play(sharp, disc, LIKELY, obs, rew, [1, 2])
    for (tb, vb, ab), (to, vo, ao) in zip(base, other, strict=True):
        assert (tb == to).all() and (vb == vo).all() and (ab == ao).all()
    ret = dataclasses.replace(LIKELY, objective="return")
    r_base = play(model, disc, ret, obs, rew, [1, 2])
    r_other = play(sharp, disc, ret, obs, rew, [1, 2])
    assert any((b[0] != o[0]).any() for b, o in zip(r_base, r_other, strict=True))
    assert any((b[0] != r[0]).any() for b, r in zip(base, r_base, strict=True))


# -- exact in both window modes and in batches ------------------------------------------------

LIKELY_TOPK = PlanConfig(horizon=5, beam_width=3, n_expand=3, k_act=4, cdf_act=None,
                         max_context_transitions=2, objective="likelihood")  # fmt: skip
LIKELY_FREQ2 = PlanConfig(horizon=3, beam_width=5, n_expand=2, plan_freq=2, k_obs=3,
                          cdf_obs=0.9, max_context_transitions=6,
                          objective="likelihood")  # fmt: skip
CONFIGS = [LIKELY, LIKELY_TOPK, LIKELY_FREQ2]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["slide", "topk-nocontext", "freq2-sampled-obs"])
def test_likelihood_cached_and_full_equal_the_reference(cfg: PlanConfig) -> None:
    model, disc = tiny_model(0, transitions=10, **RANDOM_MODEL).double(), random_discretizer()
    obs, rew = episode_data(8, 1)
    full = play(model, disc, dataclasses.replace(cfg, mode="full"), obs, rew, [3])
    cached = play(model, disc, cfg, obs, rew, [3])
    with reference_planner():
        ref = play(model, disc, cfg, obs, rew, [3])
    assert_same_plans(full, ref)
    assert_same_plans(cached, ref)
    assert all(np.isfinite(f[1]).all() and (f[1] < 0).all() for f in full)  # log-likelihoods


def test_likelihood_batched_episodes_equal_separate_ones_and_the_reference() -> None:
    model, disc = tiny_model(1, transitions=10, **RANDOM_MODEL).double(), random_discretizer(1)
    obs, rew = episode_data(6, 3, seed=2)
    seeds = [10, 11, 12]
    together = play(model, disc, LIKELY, obs, rew, seeds, drop_at=(2, 1))  # episode 1 ends
    with reference_planner():
        ref = play(model, disc, LIKELY, obs, rew, seeds, drop_at=(2, 1))
    assert_same_plans(together, ref)
    for e, seed in enumerate(seeds):
        alone = play(model, disc, LIKELY, obs[:, e : e + 1], rew[:, e : e + 1], [seed])
        for t, (tok, val, act) in enumerate(alone):
            if e == 1 and t > 2:
                break
            row = e if t <= 2 or e == 0 else e - 1  # rows after the drop
            assert (ref[t][0][row] == tok[0]).all()
            assert (ref[t][2][row] == act[0]).all()
            assert ref[t][1][row] == pytest.approx(val[0], abs=1e-9)
    same = play(model, disc, LIKELY, obs, rew, seeds, drop_at=(2, 1))
    assert all((s[2] == t[2]).all() for s, t in zip(same, together, strict=True))


# -- bad combinations -------------------------------------------------------------------------


def test_likelihood_with_a_critic_or_another_scorer_is_one_clear_error() -> None:
    model, disc = tiny_model(0, transitions=4, **RANDOM_MODEL).double(), random_discretizer(0)
    bad = dataclasses.replace(LIKELY, critic="runs/iql")
    with pytest.raises(TrajplanError, match="objective likelihood .* takes no plan.critic"):
        Planner(model, disc, bad)
    with pytest.raises(TrajplanError, match="ranks by likelihood: no scorer="):
        Planner(model, disc, LIKELY, scorer=CriticScorer(object(), 0.99))  # type: ignore[arg-type]
    with pytest.raises(TrajplanError, match="plan.objective must be one of return, likelihood"):
        Planner(model, disc, dataclasses.replace(LIKELY, objective="value"))
    assert Planner(model, disc, LIKELY).scorer.__class__ is LikelihoodScorer


def test_cli_objective_flag(tiny_run) -> None:
    """--objective likelihood plans (and names the evaluation); with a critic, or an unknown
    objective, one line and nothing written."""
    out = tiny_run.parent / "likelihood-eval"
    cli("eval", tiny_run, "--objective", "likelihood", "--episodes", "1", "--episode-steps",
        "3", "--horizon", "2", "--beam-width", "2", "--out", out, "--no-progress")  # fmt: skip
    assert any(out.rglob("eval.json"))
    res = cli("eval", tiny_run, "--objective", "likelihood", "--critic", "x", code=2)
    one_line_error(res, "takes no plan.critic")
    res = cli("plan", "--checkpoint", tiny_run, "--objective", "reward", code=2)
    one_line_error(res, "plan.objective must be one of return, likelihood")
