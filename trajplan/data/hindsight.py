"""Goals for goal-conditioned training, relabelled in hindsight (docs/method.md, Goals).

    drop_env_goal     a goal env's observations without the env's own goal (desired_goal)
    hindsight_goals   one goal state per training window: its episode's final state
    step_goals        the same per step (goal-conditioned BC: `with_hindsight_goals`)
    goal_tokens       goal values [n, g] -> tokens [n, g] through the bins of the goal dims
    attach_goals      the windows of a prepared dataset with their goal tokens

No reward is needed: the goal is a state the trajectory itself reached. The model never sees
the dataset's own goal (a maze's desired_goal): `drop_env_goal` removes it, so the only goal
the model is told of is the relabelled one (at evaluation: the env's goal, given the same way).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from trajplan.config import DataConfig, parse_goal_dims
from trajplan.data.episodes import Episodes
from trajplan.data.tokens import Discretizer
from trajplan.envs.mazes import GOAL_DIMS
from trajplan.envs.registry import env_for_dataset, is_maze
from trajplan.errors import TrajplanError


def drop_env_goal(ep: Episodes, n_goal: int) -> Episodes:
    """The episodes without the last n_goal observation dims (a flat goal env's
    desired_goal: observation, then desired_goal; trajplan.envs.mazes)."""
    o = ep.obs_dim - n_goal
    final = ep.final_observations
    return dataclasses.replace(
        ep,
        observations=np.ascontiguousarray(ep.observations[:, :o]),
        final_observations=None if final is None else np.ascontiguousarray(final[:, :o]),
    )


def env_goal_dims(ep: Episodes) -> int:
    """How many trailing observation dims of `ep` are its env's own goal: a maze's
    desired_goal (GOAL_DIMS), 0 for other envs."""
    name = ep.env_id or ep.dataset_id
    info = env_for_dataset(name) if name else None
    return GOAL_DIMS if info is not None and is_maze(info) else 0


def final_states(ep: Episodes) -> np.ndarray:
    """[n_episodes, o] the state each episode ends in: the observation after its last step
    when known, else the observation at its last step."""
    if ep.final_observations is not None:
        return np.asarray(ep.final_observations, dtype=np.float32)
    return ep.observations[ep.starts + ep.lengths - 1]


def hindsight_goals(ep: Episodes, dims: list[int]) -> np.ndarray:
    """[W, g] float32 goal values of the training windows, in WindowDataset's order (windows
    start at steps 0..len-2 of every episode, episode by episode): every window of an
    episode gets the episode's final state (`final_states`)."""
    per_ep = np.maximum(ep.lengths - 1, 0)
    return _final_goals(ep, dims)[np.repeat(np.arange(ep.n_episodes), per_ep)]


def step_goals(ep: Episodes, dims: list[int]) -> np.ndarray:
    """[n, g] float32 hindsight goals of every step: its episode's final state."""
    return _final_goals(ep, dims)[np.repeat(np.arange(ep.n_episodes), ep.lengths)]


def _final_goals(ep: Episodes, dims: list[int]) -> np.ndarray:
    """[E, g] the goal dims of every episode's final state."""
    if max(dims) >= ep.obs_dim:
        raise TrajplanError(
            f"data.goal_dims {dims}: the observation has {ep.obs_dim} dims (0..{ep.obs_dim - 1})"
        )
    return final_states(ep)[:, dims]


def with_hindsight_goals(ep: Episodes, goal_dims: str) -> Episodes:
    """A goal env's episodes whose own goal dims hold each step's hindsight goal instead
    (`step_goals`): observations keep the env's layout [observation, goal], so a policy
    trained on them (goal-conditioned BC) reads the env's goal at evaluation."""
    n_goal = env_goal_dims(ep)
    dims = parse_goal_dims(goal_dims)
    if n_goal != len(dims):
        raise TrajplanError(
            f"goal-conditioned BC needs a goal env whose goal has {len(dims)} dims: "
            f"{ep.env_id or ep.dataset_id} has {n_goal}"
        )
    base = drop_env_goal(ep, n_goal)
    goals = step_goals(base, dims)  # [n, g]
    obs = np.concatenate([base.observations, goals.astype(np.float32)], axis=1)
    return dataclasses.replace(ep, observations=obs)


def goal_tokens(disc: Discretizer, goal: np.ndarray, dims: list[int]) -> np.ndarray:
    """Goal values [n, g] (observation dims `dims`) -> int64 tokens [n, g], each through its
    dim's bins."""
    goal = np.asarray(goal, dtype=np.float64)
    if goal.ndim != 2 or goal.shape[1] != len(dims):
        raise TrajplanError(
            f"a goal has {len(dims)} values (dims {','.join(map(str, dims))}), "
            f"got shape {goal.shape[1:] if goal.ndim == 2 else goal.shape}"
        )
    cols = [disc.discretize(goal[:, j : j + 1], dims=slice(d, d + 1)) for j, d in enumerate(dims)]
    return np.concatenate(cols, axis=1).astype(np.int64)


def attach_goals(windows: object, ep: Episodes, disc: Discretizer, cfg: DataConfig) -> None:
    """Give `windows` (a WindowDataset of `ep`) the goal tokens of its windows: goals [W, g]."""
    dims = parse_goal_dims(cfg.goal_dims or "")
    values = hindsight_goals(ep, dims)
    windows.goals = torch.from_numpy(goal_tokens(disc, values, dims))  # type: ignore[attr-defined]
