"""Goal-based mazes of Gymnasium-Robotics (D4RL's maze2d and antmaze): maps, flat observations.

    maze_map          a layout ('#' wall, '.' free, 'G' goal cell, 'R' reset cell) as the
                      maze_map kwarg Gymnasium-Robotics takes
    LAYOUTS           the umaze, medium and large walls of D4RL (and of Minari's datasets)
    FlattenGoal       Dict observations -> one Box vector: `observation`, then `desired_goal`
    flatten_goal_obs  the same for arrays (one observation or a batch; datasets on disk)
    with_current_goal an observation whose goal part is the env's goal now (after a new goal)
    require_robotics  import Gymnasium-Robotics (registers its envs), or a one-line error

The env registry (`trajplan.envs.registry`) builds its maze entries from these maps and wraps
every env with a Dict goal observation in `FlattenGoal`, so that rollouts, collection,
evaluation and videos all see a flat Box: the layout of Minari's D4RL datasets flattened
(and of other offline-RL libraries): D4RL's maze2d observation was [x, y, vx, vy] plus the
goal in the infos; here it is [x, y, vx, vy, goal_x, goal_y] (AntMaze: 27 + 2).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from trajplan.errors import TrajplanError

GOAL_KEYS = ("observation", "desired_goal")  # the flat layout, in this order
GOAL_DIMS = 2  # desired_goal: (x, y), the last two dims of a flat observation
SUCCESS_RADIUS = 0.45  # Gymnasium-Robotics: the goal is reached within this distance

# D4RL's maze walls (Gymnasium-Robotics' U_MAZE, MEDIUM_MAZE, LARGE_MAZE); rows top down.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "umaze": ("#####", "#...#", "###.#", "#...#", "#####"),
    "medium": (
        "########",
        "#..##..#",
        "#..#...#",
        "##...###",
        "#..#...#",
        "#.#..#.#",
        "#...#..#",
        "########",
    ),
    "large": (
        "############",
        "#....#.....#",
        "#.##.#.#.#.#",
        "#......#...#",
        "#.####.###.#",
        "#..#.#.....#",
        "##.#.#.#.###",
        "#..#...#...#",
        "############",
    ),
}
# (row, col) of the evaluation goal of each maze: D4RL's maze2d targets, which Minari's
# D4RL/pointmaze datasets use as their evaluation goals too.
POINT_GOALS = {"umaze": (1, 1), "medium": (6, 6), "large": (7, 9)}
# (reset, goal) cells of D4RL's antmaze evaluation: one start, the far end of the maze.
ANT_TASKS = {"umaze": ((3, 1), (1, 1)), "medium": ((1, 1), (6, 6)), "large": ((1, 1), (7, 9))}

_CELLS = {"#": 1, ".": 0, "G": "g", "R": "r"}


def maze_map(
    layout: str,
    goal: tuple[int, int] | None = None,
    reset: tuple[int, int] | None = None,
) -> list[list[int | str]]:
    """The maze_map kwarg of a Gymnasium-Robotics maze: the walls of LAYOUTS[layout], with an
    optional fixed goal cell and reset cell (None: any free cell, drawn by the env)."""
    rows = [list(row) for row in LAYOUTS[layout]]
    for cell, mark in ((goal, "G"), (reset, "R")):
        if cell is not None:
            if rows[cell[0]][cell[1]] != ".":
                raise ValueError(f"{layout}: cell {cell} is not free")
            rows[cell[0]][cell[1]] = mark
    return [[_CELLS[c] for c in row] for row in rows]


def require_robotics() -> None:
    """Import Gymnasium-Robotics (which registers PointMaze_* and AntMaze_*), quietly; a
    one-line TrajplanError when it is not installed."""
    try:
        # it prints a notice about its Adroit envs to stderr on import
        with contextlib.redirect_stderr(io.StringIO()):
            import gymnasium_robotics  # noqa: F401
    except ImportError:
        raise TrajplanError(
            "the maze envs need Gymnasium-Robotics: pip install 'trajplan[mazes]'"
        ) from None


def register_robotics() -> bool:
    """Register Gymnasium-Robotics' envs when it is installed; whether it is."""
    try:
        require_robotics()
    except TrajplanError:
        return False
    return True


def is_goal_space(space: gym.Space) -> bool:
    """A Dict observation space with Box `observation` and `desired_goal` (a goal env)."""
    return isinstance(space, gym.spaces.Dict) and all(
        isinstance(space.spaces.get(k), gym.spaces.Box) for k in GOAL_KEYS
    )


def goal_space_dim(space: gym.spaces.Dict) -> int:
    """Dims of the flat observation of a goal space."""
    return sum(int(np.prod(space[k].shape)) for k in GOAL_KEYS)


def flatten_goal_obs(obs: Mapping[str, Any]) -> np.ndarray:
    """concat(observation, desired_goal) on the last axis: one [o + 2], or a batch [T, o + 2]."""
    return np.concatenate([np.asarray(obs[k]) for k in GOAL_KEYS], axis=-1)


def with_current_goal(env: gym.Env, obs: np.ndarray) -> np.ndarray:
    """A flat observation [o + 2] whose goal part is the env's goal now.

    A Gymnasium-Robotics maze returns the goal of the step it took; when that step reached the
    goal and the env drew a new one, the next step starts from the same state with the new goal.
    """
    out = np.array(obs, copy=True)
    out[-GOAL_DIMS:] = env.unwrapped.goal
    return out


class FlattenGoal(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """A goal env's Dict observation as one Box: `observation`, then `desired_goal`."""

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not is_goal_space(space):
            raise TrajplanError(f"{env}: not a goal env (observation, desired_goal)")
        parts = [space[k] for k in GOAL_KEYS]
        self.observation_space = gym.spaces.Box(
            low=np.concatenate([p.low.ravel() for p in parts]),
            high=np.concatenate([p.high.ravel() for p in parts]),
            dtype=np.result_type(*(p.dtype for p in parts)),
        )
        drop_model_file(env)

    def observation(self, observation: Mapping[str, Any]) -> np.ndarray:
        return flatten_goal_obs(observation).astype(self.observation_space.dtype, copy=False)


def drop_model_file(env: gym.Env) -> None:
    """Delete the maze's MJCF file: Gymnasium-Robotics writes one into the temp folder for every
    env it makes and never removes it; MuJoCo has read it by now."""
    path = getattr(env.unwrapped, "tmp_xml_file_path", None)
    if isinstance(path, str) and os.path.basename(path).endswith(".xml"):
        with contextlib.suppress(OSError):
            os.remove(path)


def wrap_goal_env(env: gym.Env) -> gym.Env:
    """env, with a Dict goal observation flattened (`FlattenGoal`); other envs unchanged."""
    return FlattenGoal(env) if is_goal_space(env.observation_space) else env
