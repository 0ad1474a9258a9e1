"""Normalized scores, their reference returns and summary statistics: one owner for each rule.

    normalized_score   100 * (return - ref_min) / (ref_max - ref_min): 0 random, 100 expert
    reference_scores   a dataset's: its metadata's ref_min/max_score, else the env's D4RL
                       constants (what `trajplan data info` and loaded episodes report)
    references_for     an evaluation's: the given references, else the env's D4RL constants
    stderr             standard error of a mean (None for fewer than two values)
    plan_diagnostics   a planner's predicted rewards and returns against what the env gave

The D4RL constants live in the env registry (`trajplan.envs.REGISTRY`); they were measured on
older MuJoCo versions, so they only approximate the v5 envs, and every result names its
source. See docs/method.md, Scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from trajplan.envs import EnvInfo, resolve_env

if TYPE_CHECKING:
    from trajplan.rollout import EpisodeResult

D4RL_SOURCE = "D4RL constants (approximate for v5 envs)"  # a dataset's fallback
METADATA_SOURCE = "dataset metadata"


def normalized_score(ret: float, ref_min: float, ref_max: float) -> float:
    """D4RL normalized score: 0 = random, 100 = expert."""
    return 100.0 * (ret - ref_min) / (ref_max - ref_min)


def stderr(x: np.ndarray) -> float | None:
    """Standard error of the mean (None for fewer than two values)."""
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else None


def _constants(info: EnvInfo | None) -> tuple[float, float] | None:
    """The env's D4RL constants, if the registry has them."""
    if info is None or info.ref_min is None or info.ref_max is None:
        return None
    return info.ref_min, info.ref_max


def reference_scores(
    metadata: dict, info: EnvInfo | None
) -> tuple[float | None, float | None, str | None]:
    """(ref_min, ref_max, source) of a dataset: its own metadata, else the D4RL constants of
    its registry env `info`."""
    lo, hi = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    constants = _constants(info)
    if lo is not None and hi is not None:
        if constants is not None and (float(lo), float(hi)) == constants:
            # a locally collected dataset that stored the D4RL constants: say so
            return float(lo), float(hi), f"{METADATA_SOURCE}: {D4RL_SOURCE}"
        return float(lo), float(hi), METADATA_SOURCE
    if constants is not None:
        return *constants, D4RL_SOURCE
    return None, None, None


@dataclass
class References:
    """Reference returns for normalized scores, and where they come from."""

    ref_min: float | None
    ref_max: float | None
    source: str  # "dataset metadata", "D4RL constants" or "none"

    def describe(self) -> str:
        """e.g. 'D4RL constants (-280.18 .. 12135.00)' or 'none'."""
        if self.ref_min is None or self.ref_max is None:
            return self.source
        return f"{self.source} ({self.ref_min:.2f} .. {self.ref_max:.2f})"

    def score(self, ret: float) -> float | None:
        if self.ref_min is None or self.ref_max is None:
            return None
        return normalized_score(ret, self.ref_min, self.ref_max)


def references_for(
    env: str, ref_min: float | None = None, ref_max: float | None = None, source: str = ""
) -> References:
    """The given references (e.g. from dataset metadata), else the env's D4RL constants."""
    if ref_min is not None and ref_max is not None:
        return References(float(ref_min), float(ref_max), source or METADATA_SOURCE)
    constants = _constants(resolve_env(env))
    if constants is not None:
        return References(*constants, "D4RL constants")
    return References(None, None, "none")


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
    prior_action_share: the share of executed actions that were the prior's; with a margin
    (plan.prior_margin), prior_hold_share: the share where the rule kept the prior's plan.
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
        if any(e.prior_holds is not None for e in with_prior):
            out["prior_hold_share"] = sum(e.prior_holds or 0 for e in with_prior) / n
    if len(pv_):
        out.update(
            return_steps=len(pv_),
            return_pred_mean=float(pv_.mean()),
            return_realized_mean=float(g_.mean()),
            return_bias=float((pv_ - g_).mean()),
            return_corr=corr(pv_, g_),
        )
    return out
