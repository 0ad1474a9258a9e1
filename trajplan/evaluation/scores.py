"""Summary statistics of evaluations and what a planner predicted against what happened.

    stderr             standard error of a mean (None for fewer than two values)
    realized_returns   the discounted return collected from every step of an episode
    plan_diagnostics   a planner's predicted rewards and returns against what the env gave

Reference returns and normalized scores are the env's: `trajplan.envs.references`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from trajplan.envs.rollout import EpisodeResult


def stderr(x: np.ndarray) -> float | None:
    """Standard error of the mean (None for fewer than two values)."""
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else None


def realized_returns(rewards: Sequence[float], discount: float) -> np.ndarray:
    """[T] discounted return actually collected from every step: sum_k gamma^k r_{t+k}."""
    out = np.zeros(len(rewards))
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):  # one pass per episode, not per token
        acc = rewards[t] + discount * acc
        out[t] = acc
    return out


def plan_diagnostics(episodes: Sequence[EpisodeResult], discount: float) -> dict[str, Any]:
    """How well the planner's predictions matched what the env returned, over all steps.

    reward: the expected reward of each executed step vs the env's reward. return: the score
    of the plan each action came from vs the discounted return actually collected from that
    step (sum_k gamma^k r_{t+k}); the last 1/(1-gamma) steps of an episode cut by its time
    limit are left out (their realized return is cut short, the model cannot see the clock).
    A good reward fit with a large return bias says the value head is wrong; good fits with a
    poor score say the search, not the model, is at fault. With a prior policy (plan.prior),
    prior_action_share: the share of executed actions that were the prior's.
    """
    pr, r, pv, g = [], [], [], []
    tail = int(round(1.0 / (1.0 - discount))) if discount < 1 else 0
    for e in episodes:
        if not e.pred_rewards:
            continue
        pr += e.pred_rewards
        r += e.rewards[: len(e.pred_rewards)]
        keep = len(e.rewards) if e.terminated else max(len(e.rewards) - tail, 0)
        pv += e.pred_returns[:keep]
        g += list(realized_returns(e.rewards, discount)[:keep])
    if not pr:
        return {}

    def corr(a: np.ndarray, b: np.ndarray) -> float | None:
        if len(a) < 2 or a.std() == 0 or b.std() == 0:
            return None
        return float(np.corrcoef(a, b)[0, 1])

    pr_, r_, pv_, g_ = (np.asarray(x, dtype=np.float64) for x in (pr, r, pv, g))
    out: dict[str, Any] = {
        "steps": len(pr_),
        "reward_pred_mean": float(pr_.mean()),
        "reward_env_mean": float(r_.mean()),
        "reward_mae": float(np.abs(pr_ - r_).mean()),
        "reward_corr": corr(pr_, r_),
    }
    with_prior = [e for e in episodes if e.prior_steps is not None and e.pred_rewards]
    if with_prior:
        n = sum(len(e.pred_rewards) for e in with_prior)
        out["prior_action_share"] = sum(e.prior_steps or 0 for e in with_prior) / n
    if len(pv_):
        out.update(
            return_steps=len(pv_),
            return_pred_mean=float(pv_.mean()),
            return_realized_mean=float(g_.mean()),
            return_bias=float((pv_ - g_).mean()),
            return_corr=corr(pv_, g_),
        )
    return out
