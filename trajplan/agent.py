"""A run acting in one episode at a time: the single-step API users know from SB3 or d3rlpy.

    agent = load_run("runs/tt").agent(seed=0)    # trajplan.runs
    obs, _ = env.reset(seed=0)
    action = agent.act(obs)
    agent.observe(obs, action, reward)

Any run's batched policy (a planner, a BC actor) for a batch of one episode.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trajplan.envs.registry import obs_view, resolve_env
from trajplan.runtime import resolve_device


class Agent:
    """A run acting in one episode at a time (the single-step API); `run` is a `trajplan.runs.Run`.

    reset(seed) starts an episode (the planner's samples are seeded with it); act(obs) is
    the action for the env's observation (Ant's extra dims are dropped as in training);
    observe(obs, action, reward) adds the step to a planner's context. Also a behaviour
    `trajplan.behaviour.policies.Policy`, so a run collects datasets.
    """

    def __init__(self, run: Any, env: str, seed: int = 0, device: str = "auto") -> None:
        self.run, self.info = run, resolve_env(env)
        self.name = "trajplan-planner" if run.kind == "tt" else f"trajplan-{run.kind}"
        self.batched = run.policy(env, resolve_device(device))
        self.reset(seed)

    def _view(self, obs: np.ndarray) -> np.ndarray:
        return obs_view(self.info, np.asarray(obs, dtype=np.float64))[None]  # [1, o]

    def reset(self, seed: int | None = 0) -> None:
        self.batched.reset(1, [0 if seed is None else int(seed)])

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.batched.act(self._view(obs))[0]

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: float) -> None:
        self.batched.observe(self._view(obs), np.asarray(action)[None], np.array([reward]))
