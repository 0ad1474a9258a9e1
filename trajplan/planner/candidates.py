"""Where the search's candidate actions come from, besides the model's own samples.

The reference beam search draws every action token from the model. A `CandidateSource`
replaces the actions of some expanded rows with its own, at every step of the plan; the
model still predicts rewards, values and observations for those rows, and the scorer ranks
all rows alike. Two sources ship:

    trajplan.planner.prior.PriorCandidates   a prior policy's actions (`plan.prior`)
    FirstAction                              every plan starts with given actions: "the best
                                             plan from this action" (scripts/diag_ranking.py)

`Chain` combines sources; a later one overrides an earlier one where both propose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from trajplan.planner.sampling import Uniforms


class CandidateSource(Protocol):
    """Action tokens for some of a plan's expanded rows (rows episode-major)."""

    draws_per_step: int  # uniforms it takes from every episode's stream per plan step

    def begin(self, obs: torch.Tensor, rows: int) -> None:
        """A new plan from the real observations obs [E, o] (float64), `rows` expanded rows
        per episode at every step (n_expand * beam_width)."""

    def follow(self, idx: torch.Tensor) -> None:
        """The rows were tiled or selected: row i is now old row idx[i]."""

    def propose(self, t: int, uniforms: Uniforms) -> tuple[torch.Tensor, torch.Tensor] | None:
        """At plan step t, for the E * rows expanded rows: (mask [R] bool: the rows it
        replaces, action tokens [R, a]), or None to leave the model's samples alone."""

    def observe(self, j: int, tok: torch.Tensor) -> None:
        """The beams' predicted observation token j, [R] (for sources that act on them)."""


class FirstAction:
    """Every plan of episode e starts with the action tokens first[e] ([E, a]); the rest is
    searched as usual, so the plan is the best the search finds from that action."""

    draws_per_step = 0

    def __init__(self, first: torch.Tensor) -> None:
        self.first = first

    def begin(self, obs: torch.Tensor, rows: int) -> None:
        self.rows = rows

    def follow(self, idx: torch.Tensor) -> None:
        pass

    def propose(self, t: int, uniforms: Uniforms) -> tuple[torch.Tensor, torch.Tensor] | None:
        if t:
            return None
        tok = self.first.repeat_interleave(self.rows, dim=0)  # [E*rows, a]
        return torch.ones(tok.shape[0], dtype=torch.bool, device=tok.device), tok

    def observe(self, j: int, tok: torch.Tensor) -> None:
        pass


class Chain:
    """Several sources, asked in order; where two propose for a row, the later one wins."""

    def __init__(self, sources: Sequence[CandidateSource]) -> None:
        self.sources = list(sources)
        self.draws_per_step = sum(s.draws_per_step for s in self.sources)

    def begin(self, obs: torch.Tensor, rows: int) -> None:
        for s in self.sources:
            s.begin(obs, rows)

    def follow(self, idx: torch.Tensor) -> None:
        for s in self.sources:
            s.follow(idx)

    def propose(self, t: int, uniforms: Uniforms) -> tuple[torch.Tensor, torch.Tensor] | None:
        out = None
        for s in self.sources:
            p = s.propose(t, uniforms)
            if p is None:
                continue
            if out is None:
                out = p
            else:
                mask, tok = p
                out = (out[0] | mask, torch.where(mask[:, None], tok, out[1]))
        return out

    def observe(self, j: int, tok: torch.Tensor) -> None:
        for s in self.sources:
            s.observe(j, tok)
