"""How the search ranks its beams: a `Scorer` turns what the model expects of each beam
into one number per row, and the search keeps the best `beam_width` of every episode.

    ValueScorer   TT's own (the reference): sum_{i<=t} gamma^i r_i + gamma^(t+1) V_t, with
                  r_i and V_t the expectations of the model's reward and value tokens

A learned critic is the next scorer (TT + Q): the same call, other values.
"""

from __future__ import annotations

from typing import Protocol

import torch

from trajplan.planner.sampling import beam_scores


class Scorer(Protocol):
    def score(self, rewards: torch.Tensor, t: int) -> torch.Tensor:
        """rewards [R, H+1] float64: expected r_0..r_t, then V_t at column t+1, then zeros ->
        [R] scores at plan step t (higher is better)."""


class ValueScorer:
    """The discounted predicted rewards plus the discounted predicted value."""

    def __init__(self, discount: float) -> None:
        self.discount = discount

    def score(self, rewards: torch.Tensor, t: int) -> torch.Tensor:
        return beam_scores(rewards, self.discount)
