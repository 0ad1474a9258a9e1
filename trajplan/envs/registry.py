"""One registry and one factory for the environments trajplan plans in.

Short names (`halfcheetah`, ..., `pointmaze-umaze`, `antmaze-large`) map to the Gymnasium id,
its kwargs, the default Minari dataset and the D4RL reference scores. Any other Gymnasium id
with Box spaces works too. The mazes come from Gymnasium-Robotics (`trajplan[mazes]`); their
Dict goal observations reach every consumer as one Box (`trajplan.envs.mazes.FlattenGoal`).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from trajplan.envs.mazes import (
    ANT_TASKS,
    POINT_GOALS,
    maze_map,
    register_robotics,
    require_robotics,
    wrap_goal_env,
)
from trajplan.errors import TrajplanError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnvInfo:
    """What trajplan knows about an environment."""

    name: str  # short name, or the Gymnasium id for unregistered envs
    gym_id: str  # e.g. "HalfCheetah-v5"
    dataset_id: str | None  # default Minari dataset, e.g. "mujoco/halfcheetah/medium-v0"
    ref_min: float | None  # D4RL reference scores (random / expert return)
    ref_max: float | None
    obs_keep: int | None = None  # keep only the first obs_keep observation dims (Ant: 27)
    # gym.make kwargs of the evaluation task (mazes: the map with its goal, continuing or not)
    kwargs: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # kwargs (over `kwargs`) of the task datasets are collected in; None: the same task.
    # Mazes: goals anywhere, a new goal on arrival, and every goal reached ends an episode.
    collect_kwargs: Mapping[str, Any] | None = field(default=None, compare=False)
    aliases: tuple[str, ...] = ()  # other Gymnasium ids that mean this entry (datasets' envs)
    track_camera: bool = True  # MuJoCo's "track" camera follows the agent (not in mazes)


def _maze_entries() -> dict[str, EnvInfo]:
    """pointmaze-{umaze,medium,large}[-dense] (D4RL maze2d) and antmaze-{umaze,medium,large}.

    PointMaze: a fixed goal, random starts, a continuing task (the return counts the steps at
    the goal), 300 / 600 / 800 steps. AntMaze: D4RL's fixed start and goal, the episode ends
    at the goal (return 1 or 0: the reference scores 0 / 1 make it a success rate), 700 /
    1000 / 1000 steps; the 27-dim ant observation of AntMaze-v4, as Minari's datasets.
    """
    point_refs = {  # D4RL infos.py: maze2d-*-v1 and maze2d-*-dense-v1 (random, expert)
        "umaze": ((23.85, 161.86), (68.537689, 193.66285642381482)),
        "medium": ((13.13, 277.39), (44.264742, 297.4552547777125)),
        "large": ((6.7, 273.99), (30.569041, 303.4857382709002)),
    }
    gym_names = {"umaze": "UMaze", "medium": "Medium", "large": "Large"}
    ant_data = {"umaze": "umaze", "medium": "medium-diverse", "large": "large-diverse"}
    out: dict[str, EnvInfo] = {}
    for size, name in gym_names.items():
        collect = {"maze_map": maze_map(size), "continuing_task": True, "reset_target": True}
        point = {"maze_map": maze_map(size, goal=POINT_GOALS[size]), "continuing_task": True}
        for dense, refs in zip(("", "-dense"), point_refs[size], strict=True):
            key = f"pointmaze-{size}{dense}"
            out[key] = EnvInfo(
                key,
                f"PointMaze_{name}{'Dense' if dense else ''}-v3",
                f"D4RL/pointmaze/{size}{dense}-v2",
                *refs,
                kwargs={**point, "reset_target": False},
                # Minari's maze2d data: one stream with no time limit, cut at every goal
                collect_kwargs={**collect, "max_episode_steps": 10**9},
                track_camera=False,
            )
        reset, goal = ANT_TASKS[size]
        out[f"antmaze-{size}"] = EnvInfo(
            f"antmaze-{size}",
            f"AntMaze_{name}-v4",
            f"D4RL/antmaze/{ant_data[size]}-v1",
            0.0,
            1.0,
            kwargs={"maze_map": maze_map(size, goal, reset), "continuing_task": False},
            collect_kwargs=collect,
            aliases=(f"AntMaze_{name}_Diverse_GR-v4",) if size != "umaze" else (),
            track_camera=False,
        )
    return out


# D4RL constants (computed on older MuJoCo versions: an approximation for v5 envs).
REGISTRY: dict[str, EnvInfo] = {
    "halfcheetah": EnvInfo(
        "halfcheetah", "HalfCheetah-v5", "mujoco/halfcheetah/medium-v0", -280.178953, 12135.0
    ),
    "hopper": EnvInfo("hopper", "Hopper-v5", "mujoco/hopper/medium-v0", -20.272305, 3234.3),
    "walker2d": EnvInfo("walker2d", "Walker2d-v5", "mujoco/walker2d/medium-v0", 1.629008, 4592.3),
    "ant": EnvInfo("ant", "Ant-v5", "mujoco/ant/medium-v0", -325.6, 3879.7, obs_keep=27),
    **_maze_entries(),
}


def is_maze(info: EnvInfo) -> bool:
    """A Gymnasium-Robotics maze (PointMaze / AntMaze) of the registry."""
    return info.gym_id.startswith(("PointMaze_", "AntMaze_"))


def resolve_env(name: str) -> EnvInfo:
    """Short name, registered Gymnasium id (any version of a known env), or any Box env id."""
    key = name.strip()
    if key.lower() in REGISTRY:
        return REGISTRY[key.lower()]
    for info in REGISTRY.values():  # "HalfCheetah-v5" -> the halfcheetah entry
        if key == info.gym_id or key in info.aliases:
            return info
    if key not in gym.registry and key.startswith(("PointMaze_", "AntMaze_")):
        register_robotics()  # Gymnasium-Robotics' ids exist once it is imported
    if key in gym.registry:
        return EnvInfo(key, key, None, None, None)
    import difflib

    names = ", ".join(REGISTRY)
    known = [*REGISTRY, *(i.gym_id for i in REGISTRY.values()), *gym.registry]
    close = difflib.get_close_matches(key, known, n=1) or difflib.get_close_matches(
        key.lower(), list(REGISTRY), n=1
    )
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise TrajplanError(f"unknown env {name!r}{hint}: use one of {names} or a Gymnasium id")


def env_for_dataset(dataset_id: str) -> EnvInfo | None:
    """The registry entry of a dataset id: its name appears in it ('mujoco/hopper/expert-v0'),
    or for mazes the domain and maze do ('D4RL/antmaze/medium-diverse-v1' -> antmaze-medium,
    'local/pointmaze/umaze-dense-v0' -> pointmaze-umaze-dense); or a registered env id."""
    for info in REGISTRY.values():
        if dataset_id.strip() == info.gym_id or dataset_id.strip() in info.aliases:
            return info
    parts = dataset_id.lower().replace("+", "/").split("/")
    for info in REGISTRY.values():
        if info.name in parts:
            return info
    for domain, name in zip(parts, parts[1:], strict=False):
        base = name.rsplit("-v", 1)[0]
        for kind in ("-diverse", "-play"):
            base = base.replace(kind, "")
        if f"{domain}-{base}" in REGISTRY:
            return REGISTRY[f"{domain}-{base}"]
    return None


_mujoco_quiet = False


def quiet_mujoco() -> None:
    """Route MuJoCo's warnings to Python logging.

    Without a handler MuJoCo prints the `settotalmass` deprecation of Gymnasium's v5 models
    and writes MUJOCO_LOG.TXT into the user's working directory on every env creation.
    """
    global _mujoco_quiet
    if _mujoco_quiet:
        return
    try:
        import mujoco
    except ImportError:
        return
    mujoco.set_mju_user_warning(lambda msg: log.debug("mujoco: %s", msg))
    _mujoco_quiet = True


def make_env(
    name: str,
    seed: int | None = None,
    render_mode: str | None = None,
    max_episode_steps: int | None = None,
    camera: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> gym.Env:
    """Create the Gymnasium env for `name` (short name or id), seeded when a seed is given.

    max_episode_steps overrides the env's time limit (None keeps the registered one).
    camera: the named camera MuJoCo envs render from (e.g. "track", which follows the agent).
    env_kwargs: gym.make kwargs over the registry's (e.g. `EnvInfo.collect_kwargs`).
    A Dict goal observation (mazes) comes out as one Box (`trajplan.envs.mazes.FlattenGoal`).
    """
    info = resolve_env(name)
    quiet_mujoco()
    if max_episode_steps is not None and max_episode_steps < 1:
        raise TrajplanError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
    kwargs: dict = copy.deepcopy({**info.kwargs, **(env_kwargs or {})})
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    if camera is not None:
        kwargs["camera_name"] = camera
    if is_maze(info):
        require_robotics()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # AntMaze-v4 "out of date"
            env = wrap_goal_env(gym.make(info.gym_id, render_mode=render_mode, **kwargs))
    except Exception as exc:  # missing mujoco, bad id, ...
        raise TrajplanError(f"cannot create env {info.gym_id}: {exc}") from exc
    if not isinstance(env.observation_space, gym.spaces.Box) or not isinstance(
        env.action_space, gym.spaces.Box
    ):
        raise TrajplanError(f"{info.gym_id}: trajplan needs Box observation and action spaces")
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def obs_view(info: EnvInfo, obs: np.ndarray) -> np.ndarray:
    """The part of an observation the model sees (all of it, except Ant's contact forces)."""
    return obs[..., : info.obs_keep] if info.obs_keep else obs


# -- compatibility: the one place that decides whether something fits an env ----------------


def same_env(a: str, b: str, any_version: bool = False) -> bool:
    """Whether two env names (short names or Gymnasium ids) mean the same env; with
    any_version, ids that differ only in their version (-v4 / -v5) count as the same."""
    if a.strip().lower() == b.strip().lower():
        return True
    try:
        ia, ib = resolve_env(a), resolve_env(b)
    except TrajplanError:
        return False
    if any_version:
        return ia.gym_id.split("-v")[0] == ib.gym_id.split("-v")[0]
    return ia.name == ib.name


def env_dims(env: str | gym.Env, view: bool = True) -> tuple[int, int]:
    """(observation dims, action dims) of an env given by name, or of an env object: the
    model's view of the observation (`obs_view`; Ant keeps 27) or, with view=False, all of it."""
    probe = make_env(env) if isinstance(env, str) else env
    try:
        obs = np.zeros(probe.observation_space.shape)
        if view and isinstance(env, str):
            obs = obs_view(resolve_env(env), obs)
        return int(obs.shape[-1]), int(np.prod(probe.action_space.shape))
    finally:
        if isinstance(env, str):
            probe.close()


def check_fits(
    env: str | gym.Env,
    dims: tuple[int, int],
    what: str,
    trained_on: str | None = None,
    view: bool = True,
) -> None:
    """A one-line TrajplanError unless `what` (a model or policy with these (obs, act) dims,
    trained on `trained_on` if known) can act in `env`."""
    name = env if isinstance(env, str) else (env.spec.id if env.spec else "the env")
    if trained_on and isinstance(env, str) and not same_env(trained_on, env):
        raise TrajplanError(
            f"{what} was trained on {trained_on}, not {env}: pick one trained on "
            f"{resolve_env(env).name} (or leave --env out)"
        )
    have = env_dims(env, view)
    if tuple(dims) != have:
        trained = f" (trained on {trained_on})" if trained_on else ""
        raise TrajplanError(
            f"{what}{trained} has obs/act dims {dims[0]}/{dims[1]}, but {name} has "
            f"{have[0]}/{have[1]}: wrong one for this env"
        )
