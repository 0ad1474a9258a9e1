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
    LikelihoodScorer  imitation (`plan.objective: likelihood`): the model's log-likelihood of
                   the row's planned action and observation tokens, sum_i log p(x_i | x_<i)
                   under the raw softmax; no reward, no value. The search then keeps
                   distinct plans only (a repeated token sequence ranks last).

A scorer that reads states says so (`needs_states`); the search then keeps every row's
decoded observation (`trajplan.planner.states`). One that reads log-likelihoods says so
(`needs_logp`); the search then sums every row's token log-probabilities (`TokenLogp`).
"""

from __future__ import annotations

from typing import Protocol

import torch

from trajplan.planner.sampling import beam_scores


class Critic(Protocol):
    """A learned critic on raw (not tokenized) observations and actions, batched."""

    obs_dim: int
    act_dim: int

    def q(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor: ...  # [R, o], [R, a] -> [R]
    def v(self, obs: torch.Tensor) -> torch.Tensor: ...  # [R, o] -> [R]


class Scorer(Protocol):
    needs_states: bool
    needs_logp: bool  # reads each row's summed token log-probabilities
    distinct: bool  # the search ranks a row that repeats an earlier one's tokens last

    def score(
        self,
        rewards: torch.Tensor,
        t: int,
        obs: torch.Tensor | None = None,
        act: torch.Tensor | None = None,
        logp: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """rewards [R, H+1] float64: expected r_0..r_t, then V_t at column t+1, then zeros;
        with `needs_states`, obs [R, o] and act [R, a] float64, each row's last planned
        state and action; with `needs_logp`, logp [R] float64, each row's summed token
        log-probabilities (`TokenLogp`) -> [R] scores at plan step t (higher is better)."""


class ValueScorer:
    """The discounted predicted rewards plus the discounted predicted value."""

    needs_states = needs_logp = distinct = False

    def __init__(self, discount: float) -> None:
        self.discount = discount

    def score(
        self,
        rewards: torch.Tensor,
        t: int,
        obs: torch.Tensor | None = None,
        act: torch.Tensor | None = None,
        logp: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return beam_scores(rewards, self.discount)


class CriticScorer:
    """TT + Q: the model's rewards before the last planned state, the critic from there."""

    needs_states, needs_logp, distinct = True, False, False

    def __init__(self, critic: Critic, discount: float) -> None:
        self.critic, self.discount = critic, discount

    @torch.no_grad()
    def score(
        self,
        rewards: torch.Tensor,
        t: int,
        obs: torch.Tensor | None = None,
        act: torch.Tensor | None = None,
        logp: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert obs is not None and act is not None, "the critic scores states and actions"
        disc = self.discount ** torch.arange(t, device=rewards.device, dtype=torch.float64)
        before = rewards[:, :t] @ disc  # [R]: sum_{i<t} gamma^i r_i
        tail = self.critic.q(obs.float(), act.float())  # [R]: Q(s_t, a_t)
        return before + self.discount**t * tail.to(torch.float64)  # [R]


class LikelihoodScorer:
    """Imitation: a row's score is the model's log-likelihood of its plan so far, the sum of
    log p(token | everything before it) over the planned action and observation tokens
    (the real observation the plan starts from excluded; reward and value tokens are fed
    but neither their probabilities nor their expected values are read)."""

    needs_states, needs_logp, distinct = False, True, True

    def score(
        self,
        rewards: torch.Tensor,
        t: int,
        obs: torch.Tensor | None = None,
        act: torch.Tensor | None = None,
        logp: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert logp is not None, "the likelihood scorer reads the rows' log-probabilities"
        return logp


class TokenLogp:
    """Each row's summed log-probability of the tokens added to it, float64 [R]; rows
    follow the search's tiling and selection (`follow`), like a candidate source."""

    def __init__(self, rows: int, device: torch.device) -> None:
        self.sum = torch.zeros(rows, dtype=torch.float64, device=device)

    def follow(self, idx: torch.Tensor) -> None:
        self.sum = self.sum.index_select(0, idx)

    def observe(self, j: int, tok: torch.Tensor) -> None:
        pass  # `add` gets the logits too

    def add(self, logits: torch.Tensor, tok: torch.Tensor) -> None:
        """Add log softmax(logits)[tok] of every row: logits [R, V], tok [R]."""
        logp = torch.log_softmax(logits.to(torch.float64), dim=-1)  # the raw, unfiltered softmax
        self.sum = self.sum + logp.gather(1, tok[:, None])[:, 0]


def repeated_rows(planned: torch.Tensor, n_env: int) -> torch.Tensor:
    """[R] bool: rows whose planned tokens [R, L] equal an earlier row's of the same episode
    (rows episode-major)."""
    R = planned.shape[0]
    pos = torch.arange(R, device=planned.device)
    keys = torch.cat([(pos // (R // n_env))[:, None], planned], dim=1)
    _, inv = torch.unique(keys, dim=0, return_inverse=True)  # [R] group of each row
    first = torch.full((R,), R, device=planned.device).scatter_reduce(0, inv, pos, "amin")
    return first[inv] != pos
