"""The Trajectory Transformer as an open-loop predictor (an `open_loop.Predictor`).

From the start state's tokens the model is fed the data's action tokens and samples every
other token itself, as the sequence goes: reward, value, then the next observation one
dimension at a time (each from its full softmax over the N bins, the stop token left out).
It sees the start state and the true actions only, never a later true state. The window is
the planner's cached one (`trajplan.planner.windows.CachedWindow`, the model's whole block):
the same logits as the model's full forward over the cropped sequence.
"""

from __future__ import annotations

import numpy as np
import torch

from trajplan.data.tokens import Discretizer
from trajplan.model.gpt import TrajectoryGPT
from trajplan.planner.sampling import draw
from trajplan.planner.windows import CachedWindow


class TTPredictor:
    """K sampled continuations per start of a TT model given the data's actions."""

    name = "tt"

    def __init__(self, model: TrajectoryGPT, disc: Discretizer, device: torch.device) -> None:
        self.model = model.eval()
        self.disc = disc
        self.device = device
        self.o, self.a = model.cfg.obs_dim, model.cfg.act_dim
        self.N = model.vocab_size

    def begin(self, obs: np.ndarray, samples: int, horizon: int, seed: int) -> None:
        """Start from obs [S, o]: one window per start, tiled to K rows each."""
        o, D = self.o, self.model.transition_dim
        ctx = torch.as_tensor(self.disc.discretize(obs, slice(0, o)), device=self.device)  # [S, o]
        self.win = CachedWindow(self.model, self.model.block_size, horizon * D)
        self.gen = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            self.win.begin(ctx.long())
            rows = torch.arange(ctx.shape[0], device=self.device).repeat_interleave(samples)
            self.win.select(rows)  # [S*K] rows, start-major

    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        """One token per row from softmax over the N real bins: logits [R, N+1] -> [R]."""
        u = torch.rand(logits.shape[0], generator=self.gen, dtype=torch.float64)
        return draw(torch.softmax(logits[:, : self.N].double(), dim=-1), u.to(logits.device))

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed the action tokens of actions [R, a]; sample r, V and the next observation."""
        o, a = self.o, self.a
        act = self.disc.discretize(np.asarray(actions), slice(o, o + a))  # [R, a]
        act_t = torch.as_tensor(act, device=self.device).long()
        sampled = []
        with torch.inference_mode():
            for j in range(a):
                logits = self.win.feed(act_t[:, j])  # after the last: the reward's logits
            for _ in range(2 + o):  # reward, value, next observation dims
                tok = self._sample(logits)
                sampled.append(tok)
                logits = self.win.feed(tok)
        tok = torch.stack(sampled, dim=1).cpu().numpy()  # [R, 2 + o]
        reward = self.disc.reconstruct(tok[:, :1], slice(o + a, o + a + 1))[:, 0]  # [R]
        obs = self.disc.reconstruct(tok[:, 2:], slice(0, o))  # [R, o]
        return obs, reward
