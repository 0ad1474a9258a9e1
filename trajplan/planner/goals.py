"""Goal-conditioned planning in a goal env (docs/method.md, Goal-conditioned planning).

A goal-conditioned model sees observations without the env's own goal (a maze's
desired_goal, dropped from its training data: `trajplan.data.hindsight`) and is told the goal
through its goal position instead. `GoalPlanner` puts a `Planner` in front of whole env
observations `[model observation, env goal]`: every step it splits off the env's goal (or
uses a fixed goal, `trajplan plan --goal X,Y`), sets it as the plan's goal and plans on the
rest. Its interface is the Planner's (a `BatchedPolicy` for rollouts and evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trajplan.envs.mazes import GOAL_DIMS
from trajplan.envs.registry import is_maze, resolve_env
from trajplan.errors import TrajplanError
from trajplan.planner.planner import Planner, Predictions


def env_goal_size(env: str) -> int:
    """How many trailing dims of the env's observations are its own goal (a maze's
    desired_goal: GOAL_DIMS; 0 for envs without a goal)."""
    return GOAL_DIMS if is_maze(resolve_env(env)) else 0


class GoalPlanner:
    """A goal-conditioned Planner fed env observations [E, o + n_env_goal].

    n_env_goal: the env's own goal dims at the end of its observations (they must be the
    model's goal dims, in order, unless a fixed goal is given); goal: one fixed goal [g]
    for every episode instead of the env's.
    """

    def __init__(
        self, planner: Planner, n_env_goal: int, goal: Sequence[float] | None = None
    ) -> None:
        g = len(planner.goal_dims)
        if g == 0:
            raise TrajplanError("a goal planner needs a goal-conditioned model (data.goal_dims)")
        self.fixed = None if goal is None else np.asarray(goal, dtype=np.float64)
        if self.fixed is not None and self.fixed.shape != (g,):
            dims = ",".join(map(str, planner.goal_dims))
            raise TrajplanError(
                f"--goal has {self.fixed.size} values, the model's goal has {g} (dims {dims})"
            )
        if self.fixed is None and n_env_goal != g:
            raise TrajplanError(
                f"the env's goal has {n_env_goal} dims, the model's goal {g}: give a goal "
                "(--goal) for an env without a goal of the model's size"
            )
        self.planner, self.n_env_goal = planner, n_env_goal
        self.o = planner.obs_dim

    def split(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Env observations [E, o + n_env_goal] -> (model observations [E, o], goals [E, g])."""
        obs = np.asarray(obs, dtype=np.float64)
        if obs.ndim != 2 or obs.shape[1] != self.o + self.n_env_goal:
            raise TrajplanError(
                f"expected observations of {self.o + self.n_env_goal} dims (the model's "
                f"{self.o} and the env's goal), got shape {obs.shape}"
            )
        if self.fixed is not None:
            return obs[:, : self.o], np.repeat(self.fixed[None], obs.shape[0], axis=0)
        return obs[:, : self.o], obs[:, self.o :]

    def reset(self, n_envs: int, seeds: Sequence[int] | None = None) -> None:
        self.planner.reset(n_envs, seeds)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Env observations [E, o + n_env_goal] -> actions [E, a], planned towards the goal."""
        model_obs, goal = self.split(obs)
        self.planner.set_goal(goal)
        return self.planner.act(model_obs)

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        self.planner.observe(self.split(obs)[0], actions, rewards)

    def drop(self, keep: np.ndarray) -> None:
        self.planner.drop(keep)

    def predictions(self) -> Predictions:
        return self.planner.predictions()

    @property
    def n_envs(self) -> int:
        return self.planner.n_envs

    @property
    def ms_per_plan(self) -> float:
        return self.planner.ms_per_plan
