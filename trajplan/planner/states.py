"""The decoded observation of every beam, for the parts of the search that act on states
(a prior policy's candidates, a critic's scores).

At the plan's first step every row holds the real observation; later, the model's predicted
observation tokens, decoded through bin midpoints (the stop token as the last bin). Rows
follow the beams as they are tiled and selected.
"""

from __future__ import annotations

import torch


class BeamObservations:
    """obs [R, o] float64: each row's observation, kept in step with the rows."""

    def __init__(self, mids: torch.Tensor) -> None:
        self.mids = mids  # [N, D] float64 bin midpoints; observation dims first

    def begin(self, obs: torch.Tensor) -> None:
        self.obs = obs.to(torch.float64)  # [E, o]: one row per episode

    def follow(self, idx: torch.Tensor) -> None:
        self.obs = self.obs[idx]

    def observe(self, j: int, tok: torch.Tensor) -> None:
        """Predicted observation token j of every row, tok [R]."""
        self.obs[:, j] = self.mids[tok.clamp_max(self.mids.shape[0] - 1), j]


def decode_actions(tok: torch.Tensor, mids: torch.Tensor, first: int) -> torch.Tensor:
    """Action tokens [R, a] -> [R, a] float64 bin midpoints of dims first..first+a-1."""
    a = tok.shape[1]
    cols = torch.arange(first, first + a, device=tok.device)
    return mids[tok.clamp_max(mids.shape[0] - 1), cols]
