"""Beam search over the model's tokens for E episodes at once (docs/method.md, Planner).

Per episode, `B = beam_width`, `n = n_expand`, horizon H:

    for t in 0..H-1:
        tile the beams n times (`x.repeat(n, 1)`)                      # n*B rows
        sample the a action tokens one at a time (cdf filter, top-k)
        (with a prior policy: its actions in the last rows of every episode, planner/prior.py)
        sample reward and value greedily; read their expected values
        score = sum_{i<=t} gamma^i r_i + gamma^(t+1) V_t; keep the B best  # B rows
        (with plan.prior_margin: the best descendant of the prior's own first action too)
        unless t == H-1: sample the o observation tokens greedily
    act with the first action of the best beam, decoded through bin midpoints
    (plan.prior_margin: unless it beats the prior's own plan by less than the margin)

All beams of all episodes form one batch, rows ordered episode-major (`row = e * rows + j`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trajplan.config import PlanConfig
from trajplan.decoding import KVCache
from trajplan.model import TrajectoryGPT
from trajplan.planner.prior import PriorProposals, prior_rows
from trajplan.planner.sampling import Uniforms, beam_scores, sample_token, tail_mean, token_logp
from trajplan.planner.windows import CachedWindow, FullWindow


@dataclass
class PlanResult:
    """Best plan of every episode: tokens [E, H, D] (first row starts with the current
    observation), its score [E] and the expected rewards r_0..r_{H-1} and final value V
    it was scored with, [E, H+1] (diagnostics: what the model predicted), and whether its
    first action came from a prior policy's rows [E]."""

    tokens: torch.Tensor
    value: torch.Tensor
    rewards: torch.Tensor
    from_prior: torch.Tensor  # [E] bool: its first action is a prior policy's (plan.prior)
    held: torch.Tensor  # [E] bool: the margin rule chose it over the best plan (prior_margin)


def value_std(probs: torch.Tensor, mids: torch.Tensor) -> torch.Tensor:
    """[R] float64 standard deviation of each value distribution probs [R, N] over mids [N]
    (normalized over the N bins; the stop token left out)."""
    p = probs.to(torch.float64)
    p = p / p.sum(1, keepdim=True).clamp_min(1e-30)
    mean = p @ mids
    return (p @ (mids * mids) - mean * mean).clamp_min(0.0).sqrt()


def keep_anchor(best: torch.Tensor, rank: torch.Tensor, anchored: torch.Tensor) -> torch.Tensor:
    """best [E, B] row indices (sorted, best first) of rank [E, R]: where none of them is
    anchored ([E, R] bool: descends from the prior's own first action), the last one is
    replaced by the best anchored row, so the prior's plan stays in every beam."""
    has = anchored.gather(1, best).any(1)  # [E]
    best_anchored = rank.masked_fill(~anchored, float("-inf")).argmax(1)  # [E]
    best = best.clone()
    best[:, -1] = torch.where(has, best[:, -1], best_anchored)
    return best


def beam_search(
    model: TrajectoryGPT,
    ctx: torch.Tensor,
    cfg: PlanConfig,
    mids: torch.Tensor,
    uniforms: Uniforms,
    window: int,
    pool: dict[int, list[KVCache]] | None = None,
    prior: PriorProposals | None = None,
    obs: torch.Tensor | None = None,
    first_action: torch.Tensor | None = None,
) -> PlanResult:
    """Plan for E episodes at once: ctx [E, P] tokens (context transitions + observation).

    mids [N, D] float64 bin midpoints on the device; pool: key/value buffers to reuse across
    plans (cached mode); first_action [E, a] tokens: every plan of episode e starts with
    that action (the rest is searched as usual: the best plan from a given action, e.g.
    scripts/diag_ranking.py); prior and obs [E, o] (the real observations, float64): candidate
    actions from a prior policy. Returns the best beam of every episode.
    """
    D, N = model.transition_dim, model.vocab_size
    a = model.cfg.act_dim
    o = model.cfg.obs_dim
    H, B, n = cfg.horizon, cfg.beam_width, cfg.n_expand
    E, dev = ctx.shape[0], ctx.device
    backend_cls = CachedWindow if cfg.mode == "cached" else FullWindow
    backend = backend_cls(model, window, H * D - o, pool, grow=cfg.window == "grow")
    mid_r, mid_v = mids[:, D - 2], mids[:, D - 1]  # [N] each

    logits = backend.begin(ctx)  # [E, V]
    rewards = torch.zeros(E, H + 1, dtype=torch.float64, device=dev)
    lam = cfg.logp_weight  # 0: the reference's score
    logp = torch.zeros(E, dtype=torch.float64, device=dev)  # log-likelihood of each plan
    env_base = torch.arange(E, device=dev)[:, None]
    m = prior_rows(cfg.prior_share, n * B) if prior is not None else 0
    if m:  # the prior's rows: the last m of every episode's n*B, and their observations
        assert obs is not None, "a prior needs the real observations"
        is_prior = (torch.arange(n * B, device=dev) >= n * B - m).repeat(E)  # [E*n*B] bool
        prior_idx = (env_base * (n * B) + torch.arange(n * B - m, n * B, device=dev)).reshape(-1)
        beam_obs = obs.to(torch.float64)  # [E*rows, o]
    first_prior = torch.zeros(E, dtype=torch.bool, device=dev)  # per row: action 0 is the prior's
    kappa = cfg.prior_margin if m else 0.0
    if kappa:  # rows descending from the prior's own (noise-free) first action: the anchor
        anchor0 = (torch.arange(n * B, device=dev) == n * B - m).repeat(E)  # [E*n*B] bool
        anchored = anchor0
    rows = 1
    for t in range(H):
        # 1. tile: every episode's rows repeated n times (x.repeat(n, 1); at t = 0 the
        # single context row becomes B copies first)
        idx = (env_base * rows + torch.arange(n * B, device=dev) % rows).reshape(-1)
        backend.select(idx)
        logits, rewards, logp = logits[idx], rewards[idx], logp[idx]
        if m:  # [E*m, a] prior action tokens
            beam_obs, first_prior = beam_obs[idx], first_prior[idx]
            if kappa:
                anchored = anchor0 if t == 0 else anchored[idx]
            prior_tok = prior.tokens(beam_obs[prior_idx], uniforms.take(m * a), m)
            prior_tok = torch.zeros(E * n * B, a, dtype=torch.long, device=dev).index_copy(
                0, prior_idx, prior_tok
            )  # [E*n*B, a]
        # 2. actions, one token at a time
        for i in range(a):
            tok, probs = sample_token(logits, uniforms.take(n * B), cfg.k_act, cfg.cdf_act)
            if m:
                tok = torch.where(is_prior, prior_tok[:, i], tok)
            if t == 0 and first_action is not None:  # [E*n*B]: each episode's given action
                tok = first_action[:, i].repeat_interleave(n * B)
            if lam:
                logp += token_logp(probs, tok)
            logits = backend.feed(tok)
        # 3. reward and value, greedy, scored by their expectations under the raw softmax
        tok_r, p_r = sample_token(logits, uniforms.take(n * B), cfg.k_rew, None)
        logits = backend.feed(tok_r)
        tok_v, p_v = sample_token(logits, uniforms.take(n * B), cfg.k_rew, None)
        rewards[:, t] = tail_mean(p_r[:, :N], mid_r, cfg.score_tail)
        rewards[:, t + 1] = tail_mean(p_v[:, :N], mid_v, cfg.score_tail)
        # 4-5. score and keep the B best of every episode
        values = beam_scores(rewards, cfg.discount).view(E, n * B)
        rank = values + lam * logp.view(E, n * B) if lam else values
        best = rank.topk(B, dim=1).indices  # [E, B], best first
        last = t == H - 1
        if kappa:
            best = keep_anchor(best, rank, anchored.view(E, n * B))
        values = values.gather(1, best)
        idx = (env_base * (n * B) + best).reshape(-1)
        backend.select(idx, keep_state=not last)
        rewards, tok_v, logp = rewards[idx], tok_v[idx], logp[idx]
        if m:
            beam_obs = beam_obs[idx]
            first_prior = is_prior[idx] if t == 0 else first_prior[idx]
            if kappa:
                anchored = anchored[idx]
                if last:  # the final value's spread (discounted): the margin's unit, [E*B]
                    spread = (value_std(p_v[:, :N], mid_v) * cfg.discount**H)[idx]
        rows = B
        # 6. next observation, greedy
        if last:
            backend.push(tok_v)
            break
        logits = backend.feed(tok_v)
        for j in range(o):
            tok, probs = sample_token(logits, uniforms.take(B), cfg.k_obs, cfg.cdf_obs)
            if lam:
                logp += token_logp(probs, tok)
            if m:  # the prior acts on the predicted observation, decoded (stop: last bin)
                beam_obs[:, j] = mids[tok.clamp_max(N - 1), j]
            logits = backend.feed(tok)
    chosen = torch.zeros(E, dtype=torch.long, device=dev)  # topk is sorted: row 0 is the argmax
    if kappa:  # the prior's plan unless the best beats it by more than kappa spreads
        anc = anchored.view(E, B)
        j = values.masked_fill(~anc, float("-inf")).argmax(1)  # [E] best anchored row
        gap = values[:, 0] - values.gather(1, j[:, None])[:, 0]  # [E] >= 0
        hold = gap <= kappa * spread.view(E, B).gather(1, j[:, None])[:, 0]
        chosen = torch.where(hold, j, chosen)
    best_rows = torch.arange(E, device=dev) * B + chosen
    planned = backend.planned().index_select(0, best_rows)  # [E, H*D - o]
    tokens = torch.cat([ctx[:, -o:], planned], dim=1).view(E, H, D)
    from_prior = first_prior[best_rows] if m else first_prior
    value = values.gather(1, chosen[:, None])[:, 0]
    return PlanResult(tokens, value, rewards.index_select(0, best_rows), from_prior, chosen > 0)
