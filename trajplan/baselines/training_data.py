"""What BC and IQL check before either trains: the dataset's env and its action box (the
runs they write are read by `trajplan.runs.policy`).

    env_of        the env to act in: --env, the dataset's recorded env, its id's env name
    action_box    the env's action bounds
    training_data episodes (read unless given), their env and action box, checked to fit
"""

from __future__ import annotations

import numpy as np

from trajplan.data.episodes import Episodes, load_episodes
from trajplan.envs.registry import EnvInfo, env_for_dataset, make_env, resolve_env
from trajplan.errors import TrajplanError


def env_of(env: str | None, env_id: str | None, dataset_id: str) -> EnvInfo:
    """The env to act in: --env, else the dataset's recorded env, else its id's env name."""
    for name in (env, env_id):
        if name:
            try:
                return resolve_env(name)
            except TrajplanError:
                if name is env:
                    raise
    info = env_for_dataset(dataset_id)
    if info is None:
        raise TrajplanError(f"cannot tell the env of dataset {dataset_id!r}: pass --env")
    return info


def action_box(env_name: str) -> tuple[np.ndarray, np.ndarray]:
    """The env's action bounds, low and high ([a] each, float64)."""
    probe = make_env(env_name)
    try:
        space = probe.action_space
        return np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    finally:
        probe.close()


def training_data(
    dataset_id: str, env: str | None, episodes: Episodes | None = None
) -> tuple[Episodes, EnvInfo, np.ndarray, np.ndarray]:
    """(episodes, env, action low, action high) for training on a dataset; the dataset's
    actions must fit the env's box."""
    episodes = episodes or load_episodes(dataset_id)
    info = env_of(env, episodes.env_id, dataset_id)
    low, high = action_box(info.name)
    if episodes.act_dim != low.shape[0]:
        raise TrajplanError(
            f"dataset {dataset_id!r} has {episodes.act_dim} action dims, {info.gym_id} has "
            f"{low.shape[0]}: pick a dataset for this env"
        )
    return episodes, info, low, high
