"""The open-loop harness: any one-step "model" rolled out H steps on the data's actions, and
how far its states drift from the recorded ones (docs/method.md, Long-horizon prediction).

    Predictor    what the harness needs of a model: `begin` at S start states with K samples
                 each, then `step` with the data's actions (it never sees a true later state)
    TruthReplay  the simulator: the dataset's recorded next states (zero error by definition)
    rollout      K sampled rollouts of H steps from every start -> Rollouts [S, K, H, .]
    score        error per step (all dims and per dimension group) and the log-likelihood of
                 the true states under a Gaussian fitted to the K samples
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from trajplan.envs.registry import resolve_env
from trajplan.errors import TrajplanError
from trajplan.prediction.heldout import Starts
from trajplan.progress import Progress

# Observations of Gymnasium v5 MuJoCo envs are [qpos without x (and y), qvel]: the number of
# position dims in front, the rest velocities.
POSITION_DIMS = {"hopper": 5, "walker2d": 8, "halfcheetah": 8, "ant": 13}
# Floor of a sample spread (in units of each dimension's data std) for the log-likelihood:
# K identical samples (a token model's samples often fall in one bin) would give zero variance.
SIGMA_MIN = 0.05


class Predictor(Protocol):
    """A model the harness rolls out; rows are start-major (row s*K + k: start s, sample k)."""

    name: str

    def begin(self, obs: np.ndarray, samples: int, horizon: int, seed: int) -> None:
        """Start S*K rollouts from the states obs [S, o]; `seed` fixes their randomness."""
        ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply actions [S*K, a]; returns the next states [S*K, o] and rewards [S*K]."""
        ...


class TruthReplay:
    """The simulator as a model: the recorded outcome of exactly these actions."""

    name = "simulator"

    def __init__(self, starts: Starts) -> None:
        self.starts = starts

    def begin(self, obs: np.ndarray, samples: int, horizon: int, seed: int) -> None:
        if not np.array_equal(obs, self.starts.obs):
            raise TrajplanError("TruthReplay replays its own start states only")
        self.k, self.h = samples, 0

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        want = np.repeat(self.starts.actions[:, self.h], self.k, axis=0)
        if not np.array_equal(actions, want):
            raise TrajplanError("TruthReplay knows the outcome of the recorded actions only")
        obs = np.repeat(self.starts.truth[:, self.h], self.k, axis=0)
        rew = np.repeat(self.starts.rewards[:, self.h], self.k, axis=0)
        self.h += 1
        return obs.astype(np.float64), rew.astype(np.float64)


@dataclass
class Rollouts:
    """K sampled open-loop rollouts of H steps from S starts."""

    obs: np.ndarray  # [S, K, H, o] float64 predicted s_{t+1} .. s_{t+H}
    rewards: np.ndarray  # [S, K, H] float64 predicted r_t .. r_{t+H-1}


def rollout(
    model: Predictor, starts: Starts, samples: int, seed: int = 0, progress: bool = True
) -> Rollouts:
    """Roll `model` open-loop from every start on the data's actions, K = `samples` times."""
    if samples < 1:
        raise TrajplanError(f"--samples must be at least 1, got {samples}")
    S, H, K = starts.n, starts.horizon, samples
    actions = np.repeat(starts.actions, K, axis=0)  # [S*K, H, a]
    obs = np.empty((S * K, H, starts.obs.shape[1]))
    rew = np.empty((S * K, H))
    model.begin(starts.obs, K, H, seed)
    with Progress(f"predict {model.name}", H, enabled=progress) as bar:
        for h in range(H):
            obs[:, h], rew[:, h] = model.step(actions[:, h])
            bar.update(completed=h + 1)
    return Rollouts(obs.reshape(S, K, H, -1), rew.reshape(S, K, H))


def dim_groups(env: str, obs_dim: int) -> dict[str, list[int]]:
    """{"all": every dim} plus "positions" / "velocities" for the MuJoCo envs whose
    observation layout is known (POSITION_DIMS)."""
    groups = {"all": list(range(obs_dim))}
    try:
        p = POSITION_DIMS.get(resolve_env(env).name) if env else None
    except TrajplanError:
        p = None
    if p is not None and p < obs_dim:
        groups["positions"] = list(range(p))
        groups["velocities"] = list(range(p, obs_dim))
    return groups


def sample_mean(x: np.ndarray, axis: int) -> np.ndarray:
    """The mean along `axis`, taken as first + mean(x - first): exact when all are equal."""
    first = np.take(x, [0], axis=axis)
    return (first + (x - first).mean(axis, keepdims=True)).squeeze(axis)


def gaussian_loglik(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean log-density per dimension (nats) of truth [..., o] under a diagonal Gaussian fitted
    to samples [..., K, o] (sample mean; sample variance + SIGMA_MIN^2); inputs in units of
    each dimension's data std. Returns [...]."""
    mu = sample_mean(samples, -2)
    var = (samples.var(-2, ddof=1) if samples.shape[-2] > 1 else 0.0) + SIGMA_MIN**2
    ll = -0.5 * (np.log(2 * np.pi * var) + (truth - mu) ** 2 / var)
    return ll.mean(-1)


def score(
    roll: Rollouts, starts: Starts, scale: np.ndarray, groups: dict[str, list[int]]
) -> dict[str, list[float]]:
    """Per step h = 1..H (lists of H floats), states in units of each dim's data std `scale`:

    mse_<group>  squared error of a sampled rollout, averaged over starts, samples and the
                 group's dims; mse_of_mean  the same for the mean of the K samples (all dims);
    loglik       `gaussian_loglik` of the true state, averaged over starts (nats per dim);
    reward_mse   squared error of the predicted reward (raw units)."""
    truth = starts.truth[:, None].astype(np.float64) / scale  # [S, 1, H, o]
    pred = roll.obs / scale  # [S, K, H, o]
    sq = (pred - truth) ** 2
    out: dict[str, list[float]] = {}
    for name, dims in groups.items():
        out[f"mse_{name}"] = sq[..., dims].mean(axis=(0, 1, 3)).tolist()
    out["mse_of_mean"] = ((sample_mean(pred, 1) - truth[:, 0]) ** 2).mean(axis=(0, 2)).tolist()
    samples = np.moveaxis(pred, 1, 2)  # [S, H, K, o]
    out["loglik"] = gaussian_loglik(samples, truth[:, 0]).mean(0).tolist()
    out["reward_mse"] = ((roll.rewards - starts.rewards[:, None]) ** 2).mean(axis=(0, 1)).tolist()
    return out
