"""IQL's networks and its update step (Kostrikov, Nair, Levine 2021, "Offline Reinforcement
Learning with Implicit Q-Learning", Algorithm 1), in the order of the authors' code:

    expectile_loss  |tau - 1(u < 0)| u^2: V(s) fitted to an upper expectile of Q(s, a)
    IQLNets         twin Q and their Polyak-averaged targets, V, and the Gaussian actor
                    (mean tanh(mu(s)) in [-1, 1], a state-independent log std)
    IQLLearner      one update on a batch: V by expectile regression of min target Q - V;
                    the actor by advantage-weighted regression, weights exp(beta (Q - V))
                    clipped at max_weight; both Q by TD to r + gamma (1 - terminal) V(s');
                    then the targets move tau of the way to the online Q

Everything here works on normalised observations and actions in [-1, 1]
(`trajplan.baselines.iql` prepares them); layers are initialised as in the authors' code
(orthogonal, gain sqrt 2, zero biases).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from trajplan.guards import mlp_params
from trajplan.runs.iql import mlp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # the actor's log std is clipped to this range
# What `IQLLearner.update` returns, in order (one float each, batch means unless named).
STATS = (
    "q_loss",  # TD loss, summed over the twin Q
    "v_loss",  # expectile loss
    "actor_loss",  # -weight * log-likelihood of the data's action
    "q_mean",  # min of the target twin Q at the data's (s, a)
    "v_mean",  # V(s) before its update
    "adv_mean",  # advantage Q - V (V after its update), what the weights see
    "adv_std",
    "adv_max",
    "weight_mean",  # advantage weights exp(beta * adv), clipped
    "weight_clipped",  # share of the batch at the clip
)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Elementwise |expectile - 1(diff < 0)| * diff^2 (diff = Q - V; take the mean yourself)."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff.square()


@dataclass
class Batch:
    """Transitions on the training device, observations normalised."""

    obs: torch.Tensor  # [B, o]
    act: torch.Tensor  # [B, a] in [-1, 1]
    rew: torch.Tensor  # [B] scaled rewards
    mask: torch.Tensor  # [B] 1 - terminated (a truncation bootstraps)
    next_obs: torch.Tensor  # [B, o]


class IQLNets(nn.Module):
    """IQL's five MLPs and the actor's log std."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.q1 = mlp([obs_dim + act_dim, *hidden, 1])
        self.q2 = mlp([obs_dim + act_dim, *hidden, 1])
        self.q1_target = copy.deepcopy(self.q1).requires_grad_(False)
        self.q2_target = copy.deepcopy(self.q2).requires_grad_(False)
        self.v = mlp([obs_dim, *hidden, 1])
        self.actor = mlp([obs_dim, *hidden, act_dim])  # pre-tanh mean
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def q(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The online twin Q: [B, o], [B, a] -> two [B]."""
        x = torch.cat([obs, act], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def q_target(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """min of the target twin Q: [B, o], [B, a] -> [B]."""
        x = torch.cat([obs, act], dim=-1)
        return torch.minimum(self.q1_target(x), self.q2_target(x)).squeeze(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.v(obs).squeeze(-1)  # [B, o] -> [B]

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log N(act; tanh(actor(obs)), exp(log_std)^2), summed over action dims -> [B]."""
        mean = torch.tanh(self.actor(obs))  # [B, a]
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)  # [a]
        z = (act - mean) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.actor(obs))  # [B, o] -> [B, a] in [-1, 1]


@dataclass(frozen=True)
class Hyper:
    """The update's constants (from `trajplan.baselines.iql.IQLConfig`)."""

    expectile: float
    temperature: float
    discount: float
    polyak: float
    max_weight: float
    lr: float
    actor_cosine: bool
    steps: int  # the cosine schedule's length


class IQLLearner:
    """The networks, their three Adam optimisers (the actor's with a cosine decay to 0 over
    `steps` when `actor_cosine`), and `update`."""

    def __init__(self, nets: IQLNets, hp: Hyper) -> None:
        self.nets, self.hp = nets, hp
        q_params = [*nets.q1.parameters(), *nets.q2.parameters()]
        self.q_opt = torch.optim.Adam(q_params, lr=hp.lr)
        self.v_opt = torch.optim.Adam(nets.v.parameters(), lr=hp.lr)
        actor_params = [*nets.actor.parameters(), nets.log_std]
        self.actor_opt = torch.optim.Adam(actor_params, lr=hp.lr)
        self.actor_sched = torch.optim.lr_scheduler.LambdaLR(self.actor_opt, self._actor_decay)
        self._online = [*nets.q1.parameters(), *nets.q2.parameters()]
        self._target = [*nets.q1_target.parameters(), *nets.q2_target.parameters()]

    def _actor_decay(self, t: int) -> float:
        """The actor's learning rate at update t, a share of hp.lr (optax's cosine_decay)."""
        if not self.hp.actor_cosine:
            return 1.0
        total = max(self.hp.steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))

    @property
    def actor_lr(self) -> float:
        return float(self.actor_opt.param_groups[0]["lr"])

    def update(self, b: Batch) -> torch.Tensor:
        """One step of V, actor, Q and target on batch b -> [len(STATS)] (detached)."""
        hp, nets = self.hp, self.nets
        n = b.obs.shape[0]
        with torch.no_grad():
            q_t = nets.q_target(b.obs, b.act)  # [B] what V and the actor learn from
        v = nets.value(b.obs)  # [B]
        v_loss = expectile_loss(q_t - v, hp.expectile).mean()
        _step(self.v_opt, v_loss)

        with torch.no_grad():  # V after its update, at s and s' in one pass
            v_both = nets.value(torch.cat([b.obs, b.next_obs]))  # [2B]
            adv = q_t - v_both[:n]  # [B]
            weight = torch.exp(hp.temperature * adv).clamp(max=hp.max_weight)  # [B]
            target = b.rew + hp.discount * b.mask * v_both[n:]  # [B]
        actor_loss = -(weight * nets.log_prob(b.obs, b.act)).mean()
        _step(self.actor_opt, actor_loss)
        self.actor_sched.step()

        q1, q2 = nets.q(b.obs, b.act)
        q_loss = ((q1 - target).square() + (q2 - target).square()).mean()
        _step(self.q_opt, q_loss)
        with torch.no_grad():
            torch._foreach_lerp_(self._target, self._online, hp.polyak)

        clipped = (weight >= hp.max_weight).float().mean()
        stats = (
            q_loss,
            v_loss,
            actor_loss,
            q_t.mean(),
            v.mean(),
            adv.mean(),
            adv.std(correction=0),
        )
        return torch.stack([*stats, adv.max(), weight.mean(), clipped]).detach()


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def iql_bytes(obs_dim: int, act_dim: int, hidden: Sequence[int], batch: int) -> int:
    """Peak memory of IQL's updates (float32): twin Q and their targets, V and the actor
    with gradients and two Adam moments, and a batch of transitions (obs, act, reward, mask,
    next obs) through the six MLPs forward and backward."""
    q = mlp_params([obs_dim + act_dim, *hidden, 1])
    v, actor = mlp_params([obs_dim, *hidden, 1]), mlp_params([obs_dim, *hidden, act_dim])
    weights = 2 * q * 5 + (v + actor) * 4  # q: weights, target, grad, 2 moments
    acts = batch * (6 * sum(hidden) + 2 * obs_dim + act_dim + 3)
    return 4 * (weights + 3 * acts) + 8 * batch  # the batch's int64 indices


def iql_state_bytes(obs_dim: int, act_dim: int, hidden: Sequence[int]) -> int:
    """state.pt of an IQL run (weights, targets and Adam moments), plus the run's files."""
    q = mlp_params([obs_dim + act_dim, *hidden, 1])
    v, actor = mlp_params([obs_dim, *hidden, 1]), mlp_params([obs_dim, *hidden, act_dim])
    return 4 * (2 * q * 4 + (v + actor) * 3) + 2**20
