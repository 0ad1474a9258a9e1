"""Weights for the action tokens' loss: lean the model's actions towards the data's better ones.

Not in the reference (docs/method.md, "Where trajplan deliberately differs"). The beam search
draws its candidate actions from the model, so on mixed-quality data it helps when those
candidates come from what the data's better actions did. Each step gets the weight
`exp(beta * z)`, z = (g_t - mean g) / std g the standardised return-to-go
g_t = r_t + gamma V_t (clipped to +-CLIP, weights normalised to mean 1). Observations,
rewards and values are learned from all data unweighted.
"""

from __future__ import annotations

import numpy as np

CLIP = 3.0  # |z| at most this


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
