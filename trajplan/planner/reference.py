"""The beam search of the paper, plainly: read this file first (docs/method.md, Planner).

Janner et al. (2021), "Offline Reinforcement Learning as One Big Sequence Modeling Problem",
plan by beam search over the Trajectory Transformer's tokens. A sequence is whole
transitions `[obs (o), action (a), reward, value]`, D tokens each. From the context (the
last real transitions and the current observation), with beam width B, expansion n and
horizon H:

    x = B copies of the context
    for t in 0 .. H-1:
        x = x.repeat(n, 1)                      # every beam n times: n*B candidates
        sample the a action tokens of every row, one at a time (cdf filter, top-k)
        sample the reward and value tokens greedily; r_t, V_t = their expected values
        score every row: sum_{i<=t} gamma^i r_i + gamma^(t+1) V_t
        x = the B rows with the highest scores
        unless t = H-1: sample the o observation tokens of every row, greedily
    act with the first action of the best row

Every token's distribution is the model's prediction from the whole sequence so far,
cropped to the newest `max_context_transitions * D - 1` tokens (fewer if the model's block
is smaller) by dropping whole transitions from the front.

`reference_beam_search` is that loop, one episode at a time, with nothing but the plain
forward pass `model(x)` of `trajplan.model.gpt`: no key/value cache, no window object, no
batching of episodes. It is slow and exact: tests/test_reference_search.py holds every fast
path of `trajplan.planner.search.beam_search` (cached or full windows, batched episodes, a
prior's candidates, a critic, a goal, the likelihood objective) to the same tokens. It draws
the same random numbers (`Uniforms`, in the same order) and plugs in the same optional parts
(`CandidateSource`, `Scorer`, a goal-conditioned model's goal); with none of them it is the
paper's search, `trajectory/search/core.py: beam_plan` in the authors' code.
"""

from __future__ import annotations

import copy

import torch

from trajplan.config import PlanConfig
from trajplan.model.gpt import TrajectoryGPT
from trajplan.planner.candidates import CandidateSource
from trajplan.planner.sampling import Uniforms, sample_token
from trajplan.planner.scorers import Scorer, ValueScorer, repeated_rows
from trajplan.planner.search import PlanResult


@torch.no_grad()
def reference_beam_search(
    model: TrajectoryGPT,
    ctx: torch.Tensor,
    cfg: PlanConfig,
    mids: torch.Tensor,
    uniforms: Uniforms,
    *,
    source: CandidateSource | None = None,
    obs: torch.Tensor | None = None,
    scorer: Scorer | None = None,
    goal: torch.Tensor | None = None,
) -> PlanResult:
    """Plan for E episodes, one after the other: ctx [E, P] tokens (context transitions, then
    the observation), mids [N, D] float64 bin midpoints, uniforms with E streams; a candidate
    source (begun per episode) and a scorer that reads states need obs [E, o], the real
    observations; goal [E, g]: a goal-conditioned model's goal tokens. Returns what
    `beam_search` returns, and leaves `uniforms` as `beam_search` would."""
    scorer = scorer or ValueScorer(cfg.discount)
    plans = []
    for e in range(ctx.shape[0]):
        stream = copy.copy(uniforms)  # episode e's own numbers, from the same offset
        stream.u = uniforms.u[e : e + 1]
        obs_e = None if obs is None else obs[e : e + 1]
        goal_e = None if goal is None else goal[e : e + 1]
        plans.append(_plan(model, ctx[e : e + 1], cfg, mids, stream, source, obs_e, scorer, goal_e))
    uniforms.offset = stream.offset
    return PlanResult(*(torch.cat(parts) for parts in zip(*plans, strict=True)))


def _plan(model, x, cfg, mids, u, source, obs, scorer, goal) -> tuple[torch.Tensor, ...]:
    """One episode: x [1, P] its context and observation, then [rows, P + tokens planned]."""
    D, N, o, a = model.transition_dim, model.vocab_size, model.cfg.obs_dim, model.cfg.act_dim
    H, B, n, P = cfg.horizon, cfg.beam_width, cfg.n_expand, x.shape[1]
    block = min(model.block_size, cfg.max_context_transitions * D - 1)  # tokens the model sees
    dev = x.device

    def crop(length: int, block: int) -> int:  # drop whole transitions, as few as fit
        return -(-max(length - block, 0) // D) * D

    def next_logits(x: torch.Tensor) -> torch.Tensor:  # x [R, T] -> [R, N+1]
        s = crop(x.shape[1], block)
        if cfg.window == "grow":  # not the paper: keep the first window, slide past the block
            s = max(crop(P, block), crop(x.shape[1], model.block_size))
        g = None if goal is None else goal.expand(x.shape[0], -1)
        return model(x[:, s:], goal=g)[0][:, -1]

    def append(x, logits, tok, logp):  # tok [R] after x [R, T]; its log p added to logp [R]
        lp = torch.log_softmax(logits.double(), -1).gather(1, tok[:, None])[:, 0]
        return torch.cat([x, tok[:, None]], 1), logp + lp

    def decode(tok: torch.Tensor, dim: int) -> torch.Tensor:  # tokens [R, k] of dims dim..
        cols = torch.arange(dim, dim + tok.shape[1], device=tok.device)
        return mids[tok.clamp_max(N - 1), cols]  # the stop token as the last bin

    def rows(idx: torch.Tensor) -> tuple[torch.Tensor, ...]:  # row i becomes old row idx[i]
        if source is not None:
            source.follow(idx)  # the source keeps its per-row states in step
        return x[idx], rewards[idx], logp[idx], from_source[idx]

    rewards = torch.zeros(1, H + 1, dtype=torch.float64, device=dev)  # r_0..r_t, V_t, 0..
    logp = torch.zeros(1, dtype=torch.float64, device=dev)  # planned a, o tokens' log p
    from_source = torch.zeros(1, dtype=torch.bool, device=dev)  # action 0 is the source's
    if source is not None:
        source.begin(obs, n * B)
    x, rewards, logp, from_source = rows(torch.zeros(B, dtype=torch.long, device=dev))
    R = n * B
    # uniforms per step: the source's, R per action token, R reward, R value, B per obs token
    for t in range(H):
        tile = torch.arange(R, device=dev) % B  # x.repeat(n, 1): whole copies, not interleaved
        x, rewards, logp, from_source = rows(tile)  # x [R, T]
        proposed = source.propose(t, u) if source is not None else None  # [R], [R, a]
        for i in range(a):
            logits = next_logits(x)  # [R, N+1]
            tok, _ = sample_token(logits, u.take(R), cfg.k_act, cfg.cdf_act)
            if proposed is not None:
                tok = torch.where(proposed[0], proposed[1][:, i], tok)
            x, logp = append(x, logits, tok, logp)
        if t == 0 and proposed is not None:
            from_source = proposed[0].clone()
        tok_r, p_r = sample_token(next_logits(x), u.take(R), cfg.k_rew)  # p_r [R, N+1]
        x = torch.cat([x, tok_r[:, None]], 1)
        tok_v, p_v = sample_token(next_logits(x), u.take(R), cfg.k_rew)
        x = torch.cat([x, tok_v[:, None]], 1)
        rewards[:, t] = p_r[:, :N].double() @ mids[:, D - 2]  # expectations, stop dropped
        rewards[:, t + 1] = p_v[:, :N].double() @ mids[:, D - 1]  # V_t, r_t+1 next step
        s_t = a_t = None
        if scorer.needs_states:  # the row's last state (the real one at t = 0) and action
            s_t = obs.double().expand(R, o) if t == 0 else decode(x[:, -D : -D + o], 0)
            a_t = decode(x[:, -D + o : -2], o)
        values = scorer.score(rewards, t, s_t, a_t, logp)  # [R]
        if scorer.distinct:  # a row repeating an earlier one's plan ranks last
            values = values.masked_fill(repeated_rows(x[:, P:], 1), -torch.inf)
        values, best = values.topk(B)  # [B], best first
        x, rewards, logp, from_source = rows(best)
        for j in range(o if t < H - 1 else 0):
            logits = next_logits(x)
            tok, _ = sample_token(logits, u.take(B), cfg.k_obs, cfg.cdf_obs)
            if source is not None:
                source.observe(j, tok)
            x, logp = append(x, logits, tok, logp)
    tokens = x[:1, P - o :].view(1, H, D)  # the best row: from the current observation on
    return tokens, values[:1], rewards[:1], from_source[:1]
