"""Token sampling and beam scoring for the planner (docs/method.md, Planner, steps 2-4).

Every episode has its own `torch.Generator`, and at the start of each plan the episode draws
all the uniforms the plan needs (`Uniforms`; their number depends only on the config,
`uniforms_per_plan`). Sampling is inverse-CDF on those uniforms, so a fixed seed gives the
same tokens in both window modes and the same actions whether episodes are planned one at a
time or batched together. The draw is a plain categorical sample over all N+1 classes (stop
token included); "greedy" (k = 1) is top-1 filtering followed by such a draw, so exact ties
break at random.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trajplan.config import PlanConfig


def cdf_filter(logits: torch.Tensor, probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """Give logit -1000 to every token with probability <= p* (docs/method.md, Planner, step 2).

    probs [R, V] is softmax(logits). Sort ascending and take the running sum; p* is the
    probability at the last position where that sum is still below `threshold`, or the
    smallest probability when there is no such position.
    """
    sorted_p = probs.sort(dim=-1).values  # [R, V] ascending
    below = sorted_p.cumsum(dim=-1) < threshold
    pos = torch.arange(probs.shape[-1], device=probs.device)
    last = (below * pos).argmax(dim=-1, keepdim=True)  # 0 when no position is below
    p_star = sorted_p.gather(-1, last)  # [R, 1]
    return logits.masked_fill(probs <= p_star, -1000.0)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of every row (and all ties of the k-th), the rest -inf."""
    kth = logits.topk(k, dim=-1).values[:, -1:]  # [R, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One categorical sample per row by inverse CDF: probs [R, V] (any scale), u [R] in [0, 1).

    Returns the first index whose cumulative probability exceeds `u * total`, so a class of
    probability 0 is never drawn.
    """
    cum = probs.to(torch.float64).cumsum(dim=-1)  # [R, V]
    target = (u.to(torch.float64) * cum[:, -1]).unsqueeze(1)  # [R, 1]
    idx = torch.searchsorted(cum, target, right=True).squeeze(1)
    return idx.clamp_max_(probs.shape[-1] - 1)


def sample_token(
    logits: torch.Tensor, u: torch.Tensor, k: int | None = None, cdf: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Filter (cdf, then top-k) and draw one token per row: logits [R, V], u [R].

    Returns (tokens [R] int64, raw probabilities [R, V] of the unfiltered softmax).
    """
    probs = torch.softmax(logits, dim=-1)
    if k == 1 and cdf is None:  # greedy: uniform over the maxima (top-1 filter, then draw)
        return draw((logits == logits.amax(dim=-1, keepdim=True)).to(probs.dtype), u), probs
    filtered = logits
    if cdf is not None:
        filtered = cdf_filter(filtered, probs, cdf)
    if k is not None:
        filtered = top_k_filter(filtered, k)
    if filtered is logits:
        return draw(probs, u), probs
    return draw(torch.softmax(filtered, dim=-1), u), probs


def expectation(probs: torch.Tensor, mids: torch.Tensor) -> torch.Tensor:
    """[R] float64 expected value of each distribution probs [R, N] over the bin values
    mids [N] (the raw softmax without the stop token, not renormalized: as the reference)."""
    return probs.to(torch.float64) @ mids


def beam_scores(rewards: torch.Tensor, discount: float) -> torch.Tensor:
    """rewards [R, H+1] holding r_0..r_t, V_t, then zeros -> sum_i gamma^i * rewards[:, i]."""
    disc = discount ** torch.arange(rewards.shape[1], device=rewards.device, dtype=rewards.dtype)
    return rewards @ disc


class Uniforms:
    """The uniforms of one plan: drawn up front from every episode's generator.

    u: [E, n] float64 on the planning device; `take(k)` hands out the next k numbers of every
    episode, flattened episode-major ([E * k]).
    """

    def __init__(self, generators: Sequence[torch.Generator], n: int, device: torch.device):
        rows = [torch.rand(n, generator=g, dtype=torch.float64) for g in generators]
        self.u = torch.stack(rows).to(device)
        self.offset = 0

    def take(self, k: int) -> torch.Tensor:
        u = self.u[:, self.offset : self.offset + k]
        self.offset += k
        return u.reshape(-1)


def uniforms_per_plan(cfg: PlanConfig, obs_dim: int, act_dim: int, extra: int = 0) -> int:
    """Random numbers one episode's plan consumes: actions, reward and value, observations,
    and `extra` per step for a candidate source (a prior's noise: trajplan.planner.prior)."""
    nb = cfg.n_expand * cfg.beam_width
    per_step = nb * (act_dim + 2) + extra
    return cfg.horizon * per_step + (cfg.horizon - 1) * cfg.beam_width * obs_dim
