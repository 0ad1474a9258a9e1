"""Behaviour policies that generate datasets: exported actors, a seeded random policy, mixed
quality, a trained run (`trajplan.runs.load_run(...).agent()`: TT plans, BC acts), the maze
waypoint controller (`trajplan.behaviour.waypoint`).

Exported actors themselves (the MLP, its file format, the built-in ones) live in
`trajplan.model.actor`.

Every policy follows the `Policy` protocol: `reset(seed)` at the start of an episode and
`act(obs)` for one observation. `make_policy` turns a command-line string into one.
`OneEpisode` gives a policy the batched interface of the planner, so that
`trajplan.envs.rollout.rollout` plays it (`play_policy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from trajplan.behaviour.waypoint import WaypointPolicy
from trajplan.envs.references import references_for
from trajplan.envs.registry import check_fits
from trajplan.envs.rollout import EpisodeResult, rollout
from trajplan.errors import TrajplanError
from trajplan.model.actor import LEVELS, Actor, builtin_actor, load_actor
from trajplan.runs.load import load_run


@runtime_checkable
class Policy(Protocol):
    """What `trajplan.behaviour.collect` needs from a behaviour policy."""

    name: str  # recorded as the dataset's algorithm name, e.g. "random", "sac-medium"

    def reset(self, seed: int | None) -> None:
        """Start an episode (seed any randomness of the policy)."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """One action [a] for one observation [o]."""

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: float) -> None:
        """The step just taken from `obs` (context for policies with memory, e.g. planners)."""


class ActorPolicy:
    """An exported actor as a `Policy` (deterministic: reset does nothing)."""

    def __init__(self, actor: Actor, name: str | None = None) -> None:
        self.actor = actor
        self.name = name or actor.meta.get("algorithm_name") or "actor"

    def reset(self, seed: int | None) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.actor.act(obs)

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: float) -> None:
        pass


class OneEpisode:
    """A `Policy` in the batched interface `trajplan.envs.rollout.rollout` drives, for a batch of
    one episode: behaviour policies keep one episode's state, so their episodes run one
    after another (`play_policy`)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def reset(self, n_envs: int, seeds: Any = None) -> None:
        if n_envs != 1:
            raise TrajplanError(f"a one-episode policy plays one episode at a time, not {n_envs}")
        self.policy.reset(None if seeds is None else int(seeds[0]))

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Observations [1, o] -> the policy's action [1, a], in its own dtype."""
        return np.asarray(self.policy.act(obs[0]))[None]

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        self.policy.observe(obs[0], actions[0], float(rewards[0]))

    def drop(self, keep: np.ndarray) -> None:
        pass


class RandomPolicy:
    """Uniform actions from the env's action box, reseeded at every episode."""

    name = "random"

    def __init__(self, action_space: gym.spaces.Box) -> None:
        self.space = action_space

    def reset(self, seed: int | None) -> None:
        self.space.seed(seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.space.sample()

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: float) -> None:
        pass


class MixedPolicy:
    """A behaviour policy made worse per episode: the D4RL "mixed quality" kind of data.

    At every reset the episode draws its own rate `p ~ U(random_rate)` and noise scale
    `s ~ U(noise)` from the episode seed; then each step takes a uniform random action with
    probability p, else the base policy's action plus Gaussian noise of std s (clipped to the
    action box). Episodes therefore range from the base policy's quality down to random, and
    the context of an episode tells how good it is (as in a replay buffer of one improving
    policy). `last_rate` / `last_noise` hold the current episode's draws.
    """

    def __init__(
        self,
        base: Policy,
        action_space: gym.spaces.Box,
        random_rate: tuple[float, float] = (0.0, 0.0),
        noise: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        for what, (lo, hi) in (("random rate", random_rate), ("noise", noise)):
            if not 0.0 <= lo <= hi or (what == "random rate" and hi > 1.0):
                raise TrajplanError(
                    f"{what} range must be LO:HI with 0 <= LO <= HI"
                    + (" <= 1" if what == "random rate" else "")
                    + f", got {lo}:{hi}"
                )
        self.base, self.space = base, action_space
        self.random_rate, self.noise = random_rate, noise
        parts = [base.name]
        if random_rate[1] > 0:
            parts.append(f"random{random_rate[0]:g}-{random_rate[1]:g}")
        if noise[1] > 0:
            parts.append(f"noise{noise[0]:g}-{noise[1]:g}")
        self.name = "+".join(parts)
        self.reset(0)

    def reset(self, seed: int | None) -> None:
        self.base.reset(seed)
        self.rng = np.random.default_rng(seed)
        self.last_rate = float(self.rng.uniform(*self.random_rate))
        self.last_noise = float(self.rng.uniform(*self.noise))

    def act(self, obs: np.ndarray) -> np.ndarray:
        low, high = self.space.low, self.space.high
        if self.rng.random() < self.last_rate:
            return self.rng.uniform(low, high).astype(self.space.dtype)
        act = np.asarray(self.base.act(obs), dtype=np.float64)
        if self.last_noise > 0:
            act = act + self.last_noise * (high - low) / 2 * self.rng.standard_normal(act.shape)
        return np.clip(act, low, high).astype(self.space.dtype)

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: float) -> None:
        self.base.observe(obs, action, reward)


def parse_range(text: str, what: str) -> tuple[float, float]:
    """'LO:HI' or a single number X (= X:X) -> (lo, hi); a TrajplanError otherwise."""
    parts = text.split(":")
    try:
        lo, hi = (float(parts[0]), float(parts[-1])) if len(parts) <= 2 else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        raise TrajplanError(f"{what} must be a number or a range LO:HI, got {text!r}")
    return lo, hi


def make_policy(spec: str, env_name: str, env: gym.Env) -> Policy:
    """Turn a --policy string into a Policy for `env` (made for env_name).

    spec: "random"; "medium" / "expert" (the built-in actor of this env); "waypoint" (the
    maze controller of pointmaze envs, `trajplan.behaviour.waypoint`); a path to an exported
    actor (*.actor.safetensors); or a trajplan checkpoint directory (the planner).
    """
    if spec == "random":
        return RandomPolicy(env.action_space)
    if spec == "waypoint":
        return WaypointPolicy.for_env(env)
    path = Path(spec).expanduser()
    if spec in LEVELS:
        path = builtin_actor(env_name, spec)
    elif path.is_dir():
        return load_run(path).agent(env_name)  # a trained run: TT plans, BC acts
    elif not (path.suffix == ".safetensors" or path.exists()):
        raise TrajplanError(
            f"unknown policy {spec!r}: use 'random', 'medium', 'expert', 'waypoint', a path "
            "to an exported actor (.actor.safetensors) or a trajplan checkpoint directory"
        )
    actor = load_actor(path)
    check_fits(env, (actor.obs_dim, actor.act_dim), f"policy {spec}", actor.env_id, view=False)
    name = actor.meta.get("algorithm_name")  # "td3-medium", "iql", "bc": as it was exported
    if not name:  # an older export: its algorithm and level
        level = actor.meta.get("level") or (spec if spec in LEVELS else None)
        algorithm = str(actor.meta.get("algorithm", "sac")).split()[0]  # "td3 (stable-...)"
        name = f"{algorithm}-{level}" if level else "actor"
    return ActorPolicy(actor, str(name))


def play_policy(policy: Policy, env_name: str, seeds: Sequence[int]) -> list[EpisodeResult]:
    """Whole episodes of a behaviour `Policy` on whole observations, one after another
    (episode i reset with seeds[i]), scored with the env's D4RL references."""
    refs = references_for(env_name)
    return [rollout(OneEpisode(policy), env_name, [s], refs, view=False)[0] for s in seeds]
