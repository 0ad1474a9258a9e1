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
from trajplan.threads import PLAN_THREADS, torch_threads


class Agent:
    """A run acting in one episode at a time (the single-step API); `run` is a `trajplan.runs.Run`.

    reset(seed) starts an episode (the planner's samples are seeded with it); act(obs) is
    the action for the env's observation (Ant's extra dims are dropped as in training);
    observe(obs, action, reward) adds the step to a planner's context. Also a behaviour
    `trajplan.behaviour.policies.Policy`, so a run collects datasets.

    threads: torch's CPU threads while it acts (the caller's are restored after each call);
    1 as in the CLI (`--threads`), as planning's many tiny ops run fastest on one thread;
    None leaves torch's own setting.
    """

    def __init__(
        self,
        run: Any,
        env: str,
        seed: int = 0,
        device: str = "auto",
        threads: int | None = PLAN_THREADS,
    ) -> None:
        self.run, self.info, self.threads = run, resolve_env(env), threads
        self.name = "trajplan-planner" if run.kind == "tt" else f"trajplan-{run.kind}"
        with torch_threads(threads):  # also checks the value, before anything is built
            self.batched = run.policy(env, resolve_device(device))
        self.reset(seed)

    def _view(self, obs: np.ndarray) -> np.ndarray:
        return obs_view(self.info, np.asarray(obs, dtype=np.float64))[None]  # [1, o]

    def reset(self, seed: int | None = 0) -> None:
        self.batched.reset(1, [0 if seed is None else int(seed)])

    def act(self, obs: np.ndarray) -> np.ndarray:
        with torch_threads(self.threads):
            return self.batched.act(self._view(obs))[0]

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: float) -> None:
        with torch_threads(self.threads):
            self.batched.observe(self._view(obs), np.asarray(action)[None], np.array([reward]))
