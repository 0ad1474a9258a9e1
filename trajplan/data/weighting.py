"""Weights for the action tokens' loss: lean the model's actions towards the data's better ones.

Not in the reference (docs/method.md, "Where trajplan deliberately differs"). The beam search
draws its candidate actions from the model, so on mixed-quality data it helps when those
candidates come from what the data's better actions did. Each step gets the weight
`exp(beta * z)`, z = (g_t - mean g) / std g the standardised return-to-go
g_t = r_t + gamma V_t (clipped to +-CLIP, weights normalised to mean 1). Observations,
rewards and values are learned from all data unweighted.

With a critic instead (`data.critic_weighting`, an IQL run): the weight of step t is IQL's
actor-extraction weight `exp(beta * (Q(s_t, a_t) - V(s_t)))` in the critic's training reward
units, clipped at MAX_WEIGHT and normalised to mean 1, so the model's candidates lean to the
actions the critic rates above the state's value while staying a distribution over the data's
actions (docs/method.md).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

CLIP = 3.0  # |z| at most this
MAX_WEIGHT = 100.0  # advantage weights are clipped here, as IQL's actor extraction does


class Critic(Protocol):
    """What the critic weighting reads: IQL's Q and V on raw observations and actions."""

    reward_scale: float

    def q(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor: ...  # [R]
    def v(self, obs: torch.Tensor) -> torch.Tensor: ...  # [R]


def returns_to_go(transitions: np.ndarray, discount: float) -> np.ndarray:
    """[n] float64 g_t = r_t + gamma * V_t from transition rows [obs, act, r, V]."""
    return transitions[:, -2].astype(np.float64) + discount * transitions[:, -1]


def action_weights(transitions: np.ndarray, beta: float, discount: float) -> np.ndarray:
    """[n] float32 weights exp(beta * z), mean 1, z against the dataset's mean return-to-go."""
    g = returns_to_go(transitions, discount)
    if beta == 0.0 or g.std() == 0.0:
        return np.ones(len(g), dtype=np.float32)
    return _normalised(beta, (g - g.mean()) / g.std())


def _normalised(beta: float, z: np.ndarray) -> np.ndarray:
    w = np.exp(beta * np.clip(z, -CLIP, CLIP))
    return (w / w.mean()).astype(np.float32)


def critic_advantages(
    critic: Critic, obs: np.ndarray, act: np.ndarray, batch: int = 65_536
) -> np.ndarray:
    """[n] float64 Q(s, a) - V(s) for obs [n, o] and act [n, a], in the critic's training
    reward units (where IQL's temperature applies)."""
    out = np.empty(len(obs), dtype=np.float64)
    with torch.no_grad():
        for i in range(0, len(obs), batch):
            o = torch.as_tensor(obs[i : i + batch], dtype=torch.float32)
            a = torch.as_tensor(act[i : i + batch], dtype=torch.float32)
            out[i : i + batch] = (critic.q(o, a) - critic.v(o)).double().cpu().numpy()
    return out * critic.reward_scale


def advantage_weights(adv: np.ndarray, beta: float) -> np.ndarray:
    """[n] float32 exp(beta * adv) clipped at MAX_WEIGHT, normalised to mean 1."""
    w = np.exp(np.minimum(beta * np.asarray(adv, dtype=np.float64), np.log(MAX_WEIGHT)))
    return (w / w.mean()).astype(np.float32)
