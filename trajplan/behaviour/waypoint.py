"""The waypoint controller that made D4RL's maze2d data and Minari's D4RL/pointmaze: no RL.

A breadth-first search over the maze's free cells, from the goal's cell, gives every cell's
distance to the goal (value iteration on a grid with unit steps); the next waypoint is the
free neighbour cell closest to the goal. A PD controller (gains 10 and -1 on position error and
velocity, as D4RL's) steers the point to that cell's centre and, once within `threshold` of
it, on to the next one; in the goal's cell (or when the next waypoint is the goal's cell) it
steers to the goal itself. Actions are clipped to the action box. Noise is not the
controller's: `trajplan data collect --policy waypoint` wraps it in
`trajplan.behaviour.policies.MixedPolicy` (Gaussian noise, std 0.5 by default, as Minari).

Observations are the flat maze observations of `trajplan.envs.mazes`: [x, y, vx, vy, goal_x,
goal_y]. A new goal (the env draws one on arrival) is noticed from the observation and
searched anew.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from trajplan.envs.mazes import GOAL_DIMS
from trajplan.errors import TrajplanError

Cell = tuple[int, int]
STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right (row, col)


@dataclass(frozen=True)
class MazeGrid:
    """A maze's cells and their place in the simulation (as Gymnasium-Robotics' `Maze`)."""

    walls: np.ndarray  # [rows, cols] bool
    scale: float  # cell size
    x_center: float  # x of the map's centre, from its left edge
    y_center: float  # y of the map's centre, from its top edge

    @classmethod
    def of_env(cls, env: gym.Env) -> MazeGrid:
        """The grid of a Gymnasium-Robotics maze env (its `maze`)."""
        maze = getattr(env.unwrapped, "maze", None)
        if maze is None:
            raise TrajplanError(f"{env.unwrapped}: not a Gymnasium-Robotics maze env")
        walls = np.array([[c == 1 for c in row] for row in maze.maze_map], dtype=bool)
        return cls(
            walls, float(maze.maze_size_scaling), float(maze.x_map_center), float(maze.y_map_center)
        )

    def cell(self, xy: np.ndarray) -> Cell:
        """The (row, col) of a point (x, y)."""
        row = int(np.floor((self.y_center - xy[1]) / self.scale))
        col = int(np.floor((xy[0] + self.x_center) / self.scale))
        return row, col

    def centre(self, cell: Cell) -> np.ndarray:
        """(x, y) of a cell's centre."""
        return np.array(
            [
                (cell[1] + 0.5) * self.scale - self.x_center,
                self.y_center - (cell[0] + 0.5) * self.scale,
            ]
        )

    def free(self, cell: Cell) -> bool:
        rows, cols = self.walls.shape
        return 0 <= cell[0] < rows and 0 <= cell[1] < cols and not self.walls[cell]

    def distances(self, goal: Cell) -> np.ndarray:
        """[rows, cols] steps from every free cell to `goal` (inf: a wall or cut off)."""
        dist = np.full(self.walls.shape, np.inf)
        if not self.free(goal):
            return dist
        dist[goal] = 0
        queue = deque([goal])
        while queue:
            here = queue.popleft()
            for dr, dc in STEPS:
                there = (here[0] + dr, here[1] + dc)
                if self.free(there) and dist[there] == np.inf:
                    dist[there] = dist[here] + 1
                    queue.append(there)
        return dist


class WaypointPolicy:
    """The PD waypoint controller of a point maze, as a behaviour `Policy` (deterministic)."""

    name = "waypoint"
    default_noise = 0.5  # the Gaussian action noise (std) collection adds unless told otherwise

    def __init__(
        self,
        grid: MazeGrid,
        action_space: gym.spaces.Box,
        gains: tuple[float, float] = (10.0, -1.0),
        threshold: float = 0.1,
    ) -> None:
        self.grid, self.gains, self.threshold = grid, gains, threshold
        self.low, self.high = action_space.low, action_space.high
        self.dtype = action_space.dtype
        self.reset(None)

    @classmethod
    def for_env(cls, env: gym.Env) -> WaypointPolicy:
        """The controller of a PointMaze env (flat observations); a one-line error otherwise."""
        if not hasattr(env.unwrapped, "point_env"):
            raise TrajplanError(
                "the waypoint policy steers the point of the pointmaze-* envs, "
                f"not {env.spec.id if env.spec else env}"
            )
        return cls(MazeGrid.of_env(env), env.action_space)

    def reset(self, seed: int | None) -> None:
        self._goal: np.ndarray | None = None  # the goal the distances were searched for
        self._dist = np.zeros(self.grid.walls.shape)
        self._target: Cell | None = None  # the waypoint cell steered to

    def act(self, obs: np.ndarray) -> np.ndarray:
        pos, vel, goal = obs[:2], obs[2:4], obs[-GOAL_DIMS:]
        if self._goal is None or np.abs(goal - self._goal).max() > 1e-9:
            self._goal = np.array(goal, dtype=np.float64)
            self._dist = self.grid.distances(self.grid.cell(goal))
            self._target = None
        aim = self._aim(pos)
        action = self.gains[0] * (aim - pos) + self.gains[1] * vel
        return np.clip(action, self.low, self.high).astype(self.dtype)

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: float) -> None:
        pass

    def _aim(self, pos: np.ndarray) -> np.ndarray:
        """Where to steer from `pos`: the waypoint's centre, or the goal itself."""
        assert self._goal is not None
        here = self.grid.cell(pos)
        if not self.grid.free(here) or self._dist[here] in (0, np.inf):
            return self._goal  # in the goal's cell (or lost): straight to the goal
        target = self._target
        if target is None or abs(target[0] - here[0]) + abs(target[1] - here[1]) > 1:
            target = self._next(here)  # start, or pushed off the path: from here
        elif target == here and np.linalg.norm(self.grid.centre(here) - pos) <= self.threshold:
            target = self._next(here)  # this waypoint reached
        self._target = target
        return self._goal if self._dist[target] == 0 else self.grid.centre(target)

    def _next(self, here: Cell) -> Cell:
        """The free neighbour of `here` closest to the goal (here itself if none is closer)."""
        best, best_dist = here, self._dist[here]
        for dr, dc in STEPS:
            there = (here[0] + dr, here[1] + dc)
            if self.grid.free(there) and self._dist[there] < best_dist:
                best, best_dist = there, self._dist[there]
        return best
