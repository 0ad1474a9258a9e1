"""The transitions IQL trains on (`trajplan.baselines.iql`), from a run's episodes.

Transitions (s, a, r, s') within episodes, every step of every episode; the TD mask
is 1 - terminated (a truncation bootstraps: a time limit, or a maze's goal where the data
cuts its stream, with the goal's reward on that very step). An episode's last step
bootstraps from the observation after it (`Episodes.final_observations`); where that is not
known (episodes built by hand) a truncated last step is left out. Two choices beyond the
authors' code: observations are normalised by the data's mean and std (kept in the critic
file, folded into the exported actor's first layer), and actions are mapped from the env's
box to [-1, 1] as BC maps them (the identity for the MuJoCo envs, whose box is [-1, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from trajplan.data.transitions import Episodes
from trajplan.errors import TrajplanError


class RewardRule(Protocol):
    """The reward settings of `trajplan.baselines.iql.IQLConfig`."""

    normalize_rewards: bool  # rewards x 1000 / (max - min episode return)
    reward_offset: float  # added after that


@dataclass
class Transitions:
    """Transitions ready to sample (CPU): every step's row, and which rows are usable."""

    obs: torch.Tensor  # [n (+ n_episodes), o] normalised observations of every step (then
    # of every episode's end, when known)
    act: torch.Tensor  # [n, a] actions in [-1, 1]
    rew: torch.Tensor  # [n] rewards x reward_scale + offset
    mask: torch.Tensor  # [n] 1 - terminated
    nxt: torch.Tensor  # [n] int64 row of obs after each step (unknown: its own, unused)
    rows: torch.Tensor  # [m] int64 the steps to sample: a next observation, or terminated
    mean: np.ndarray  # [o] float64 observation mean
    std: np.ndarray  # [o] its std + 1e-3
    low: np.ndarray  # [a] the action box
    high: np.ndarray  # [a]
    reward_scale: float


def prepare(episodes: Episodes, low: np.ndarray, high: np.ndarray, cfg: RewardRule) -> Transitions:
    """Normalise, squash, scale, and link each step to the observation after it: the next
    step's, or after an episode's last step its final observation (row n + episode)."""
    n, lengths = episodes.n_steps, episodes.lengths
    last = np.zeros(n, dtype=bool)
    last[episodes.starts + lengths - 1] = True  # [n] an episode's last step
    term = episodes.terminations.astype(bool)
    obs = episodes.observations.astype(np.float64)
    nxt = np.arange(n) + ~last  # [n] the next step, or itself at a last step
    final = episodes.final_observations
    if final is not None:  # [n_episodes, o] after the observations, as rows n + episode
        obs = np.concatenate([obs, final.astype(np.float64)])
        nxt[last] = n + np.arange(lengths.size)
    rows = np.flatnonzero(~last | term | (final is not None))
    if rows.size == 0:
        raise TrajplanError(
            f"dataset {episodes.dataset_id!r} has no transitions with a next observation "
            "(every episode is one truncated step)"
        )
    scale = 1.0
    if cfg.normalize_rewards:
        returns = episodes.returns()  # [n_episodes]
        span = float(returns.max() - returns.min())
        scale = 1000.0 / span if span > 0 else 1.0  # one return: nothing to scale by
    mean, std = obs[:n].mean(0), obs[:n].std(0) + 1e-3
    a = np.clip(episodes.actions.astype(np.float64), low, high)
    rew = episodes.rewards.astype(np.float64) * scale + cfg.reward_offset
    return Transitions(
        obs=torch.as_tensor((obs - mean) / std, dtype=torch.float32),
        act=torch.as_tensor(2.0 * (a - low) / (high - low) - 1.0, dtype=torch.float32),
        rew=torch.as_tensor(rew, dtype=torch.float32),
        mask=torch.as_tensor(1.0 - term, dtype=torch.float32),
        nxt=torch.as_tensor(nxt, dtype=torch.int64),
        rows=torch.as_tensor(rows, dtype=torch.int64),
        mean=mean,
        std=std,
        low=low,
        high=high,
        reward_scale=scale,
    )
