"""A prior policy's actions as beam-search candidates (`plan.prior`; not the reference).

The reference beam search draws every candidate action from the model. At CPU scale the
model's action distribution is its weakest part on data from one precise actor: on Walker2d
medium the recipe model's expected action is 0.26 off the data's (mean absolute error per
dimension) where a 2x256 MLP trained by behaviour cloning in a minute is 0.07 off.

With a prior, a share of every step's expanded rows (`plan.prior_share`: default all, else
the last rows of each episode) take their actions from the prior policy: its action for
the row's observation (the real one at the plan's first step, the model's predicted one,
decoded through bin midpoints, later), plus Gaussian noise of `plan.prior_noise` times each
dimension's half range, clipped to the bounds and tokenized. The first prior row of every
episode gets no noise, so the prior's own action is always a candidate. The model still
predicts rewards, values and observations for every row, and the search ranks all rows
alike, as in MBOP (Argenson and Dulac-Arnold, 2021), with the TT as its model.

Noise comes from the plan's uniforms (inverse normal CDF), so a seed fixes the plan.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trajplan.actors import Actor, load_actor
from trajplan.errors import TrajplanError
from trajplan.tokens import Discretizer


def load_prior(path: str | Path) -> Actor:
    """A BC run directory (its policy) or an exported *.actor.safetensors file."""
    from trajplan.bc import POLICY_FILE  # here: the planner need not import the data stack

    p = Path(path).expanduser()
    if p.is_dir():
        p = p / POLICY_FILE
        if not p.is_file():
            raise TrajplanError(f"plan.prior: {path} holds no {POLICY_FILE} (not a BC run?)")
    elif not p.is_file():
        raise TrajplanError(f"plan.prior: {path} not found (give a BC run or an actor file)")
    return load_actor(p)


def prior_rows(cfg_share: float, rows: int) -> int:
    """How many of an episode's `rows` expanded rows take the prior's actions (0 when off,
    at least 1 when on)."""
    if cfg_share <= 0.0:
        return 0
    return min(rows, max(1, round(cfg_share * rows)))


class PriorProposals:
    """Tokenized prior actions for the last `m` of every episode's `rows` expanded rows."""

    def __init__(
        self, actor: Actor, discretizer: Discretizer, obs_dim: int, act_dim: int, noise: float
    ) -> None:
        if (actor.obs_dim, actor.act_dim) != (obs_dim, act_dim):
            raise TrajplanError(
                f"plan.prior acts on {actor.obs_dim} observation and {actor.act_dim} action "
                f"dims; the model has {obs_dim} and {act_dim}"
            )
        self.actor, self.disc, self.noise = actor, discretizer, noise
        self.o, self.a = obs_dim, act_dim
        self.low = np.asarray(actor.action_low, dtype=np.float64)
        self.high = np.asarray(actor.action_high, dtype=np.float64)

    def tokens(self, obs: torch.Tensor, u: torch.Tensor, m: int) -> torch.Tensor:
        """obs [E*m, o] float64 (episode-major, m rows each), u [E*m*a] uniforms ->
        action tokens [E*m, a]; row 0 of every episode is noise-free. The actor runs in
        numpy (`Actor.act`, its one forward), so on CUDA each plan step copies m rows of
        observations to the host and back."""
        act = self.actor.act(obs.cpu().numpy()).astype(np.float64)  # [E*m, a]
        if self.noise > 0:
            eps = torch.special.ndtri(u.clamp(1e-12, 1 - 1e-12)).view(-1, m, self.a)
            eps[:, 0] = 0.0  # the prior's own action stays a candidate
            half = 0.5 * (self.high - self.low)
            act = act + self.noise * half * eps.reshape(-1, self.a).cpu().numpy()
            act = np.clip(act, self.low, self.high)
        tok = self.disc.discretize(act, dims=slice(self.o, self.o + self.a))
        return torch.as_tensor(tok, device=obs.device)
