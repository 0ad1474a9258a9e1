"""How the search ranks its beams: a `Scorer` turns what is known of each expanded row at
plan step t into one number, and the search keeps the best `beam_width` of every episode.

    ValueScorer    TT's own (the reference): sum_{i<=t} gamma^i r_i + gamma^(t+1) V_t, with
                   r_i and V_t the expectations of the model's reward and value tokens
    CriticScorer   TT + Q: the model's predicted rewards up to the last planned state s_t,
                   then a learned critic (an IQL run's Q or V) from there:
                     "q":  sum_{i<t} gamma^i r_i + gamma^t Q(s_t, a_t)
                     "v":  sum_{i<t} gamma^i r_i + gamma^t V(s_t)
                   s_t is the real observation at t = 0, the model's predicted one later
                   (decoded through bin midpoints), a_t the row's action (bin midpoints).

A scorer that reads states says so (`needs_states`); the search then keeps every row's
decoded observation (`trajplan.planner.states`).
"""

from __future__ import annotations

from typing import Protocol

import torch

from trajplan.config import CRITIC_FORMS
from trajplan.planner.sampling import beam_scores


class Critic(Protocol):
    """A learned critic on raw (not tokenized) observations and actions, batched."""

    obs_dim: int
    act_dim: int

    def q(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor: ...  # [R, o], [R, a] -> [R]
    def v(self, obs: torch.Tensor) -> torch.Tensor: ...  # [R, o] -> [R]


class Scorer(Protocol):
    needs_states: bool

    def score(
        self,
        rewards: torch.Tensor,
        t: int,
        obs: torch.Tensor | None = None,
        act: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """rewards [R, H+1] float64: expected r_0..r_t, then V_t at column t+1, then zeros;
        with `needs_states`, obs [R, o] and act [R, a] float64, each row's last planned
        state and action -> [R] scores at plan step t (higher is better)."""


class ValueScorer:
    """The discounted predicted rewards plus the discounted predicted value."""

    needs_states = False

    def __init__(self, discount: float) -> None:
        self.discount = discount

    def score(
        self,
        rewards: torch.Tensor,
        t: int,
        obs: torch.Tensor | None = None,
        act: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return beam_scores(rewards, self.discount)


class CriticScorer:
    """TT + Q: the model's rewards before the last planned state, the critic from there."""

    needs_states = True

    def __init__(self, critic: Critic, discount: float, form: str = "q") -> None:
        if form not in CRITIC_FORMS:
            raise ValueError(f"critic form {form!r} is not one of {CRITIC_FORMS}")
        self.critic, self.discount, self.form = critic, discount, form

    @torch.no_grad()
    def score(
        self,
        rewards: torch.Tensor,
        t: int,
        obs: torch.Tensor | None = None,
        act: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert obs is not None and act is not None, "the critic scores states and actions"
        disc = self.discount ** torch.arange(t, device=rewards.device, dtype=torch.float64)
        before = rewards[:, :t] @ disc  # [R]: sum_{i<t} gamma^i r_i
        if self.form == "q":
            tail = self.critic.q(obs.float(), act.float())
        else:
            tail = self.critic.v(obs.float())
        return before + self.discount**t * tail.to(torch.float64)  # [R]
