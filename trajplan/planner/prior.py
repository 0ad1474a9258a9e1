"""A prior policy's actions as beam-search candidates (`plan.prior`; not the reference).

The reference beam search draws every candidate action from the model. At CPU scale the
model's action distribution is its weakest part on data from one precise actor, where a
small MLP trained by behaviour cloning predicts the data's actions far better
(docs/results.md, "A stronger baseline, and a prior for the search").

With a prior, a share of every step's expanded rows (`plan.prior_share`: default all, else
the last rows of each episode) take their actions from the prior policy: its action for
the row's observation (the real one at the plan's first step, the model's predicted one,
decoded through bin midpoints, later), plus Gaussian noise of `plan.prior_noise` times each
dimension's half range, clipped to the bounds and tokenized. The first prior row of every
episode gets no noise, so the prior's own action is always a candidate. The model still
predicts rewards, values and observations for every row, and the search ranks all rows
alike, as in MBOP (Argenson and Dulac-Arnold, 2021), with the TT as its model.
`PriorCandidates` is the search's candidate source (`trajplan.planner.candidates`).

Noise comes from the plan's uniforms (inverse normal CDF), so a seed fixes the plan.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trajplan.data.tokens import Discretizer
from trajplan.errors import TrajplanError
from trajplan.model.actor import POLICY_FILE, Actor, load_actor
from trajplan.planner.sampling import Uniforms
from trajplan.planner.states import BeamObservations


def load_prior(path: str | Path) -> Actor:
    """A BC run directory (its policy) or an exported *.actor.safetensors file."""

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


class PriorCandidates:
    """A prior policy as the search's `CandidateSource`: the last m of every episode's
    expanded rows take its (noisy) actions for the row's observation: the real one at the
    plan's first step, the beam's predicted one (decoded through bin midpoints) later."""

    def __init__(self, proposals: PriorProposals, m: int, mids: torch.Tensor) -> None:
        self.proposals, self.m = proposals, m
        self.states = BeamObservations(mids)  # mids [N, D] float64
        self.draws_per_step = m * proposals.a  # the noise of its actions

    def begin(self, obs: torch.Tensor, rows: int) -> None:
        self.states.begin(obs)
        E, dev = obs.shape[0], obs.device
        is_prior = torch.arange(rows, device=dev) >= rows - self.m
        self.mask = is_prior.repeat(E)  # [E*rows] bool
        base = torch.arange(E, device=dev)[:, None] * rows
        self.idx = (base + torch.arange(rows - self.m, rows, device=dev)).reshape(-1)  # [E*m]

    def follow(self, idx: torch.Tensor) -> None:
        self.states.follow(idx)

    def propose(self, t: int, uniforms: Uniforms) -> tuple[torch.Tensor, torch.Tensor]:
        obs = self.states.obs[self.idx]  # [E*m, o]
        tok = self.proposals.tokens(obs, uniforms.take(self.draws_per_step), self.m)
        full = torch.zeros(self.mask.shape[0], tok.shape[1], dtype=torch.long, device=tok.device)
        return self.mask, full.index_copy(0, self.idx, tok)  # [E*rows, a]

    def observe(self, j: int, tok: torch.Tensor) -> None:
        self.states.observe(j, tok)
