"""Behaviour policies that generate datasets: exported actors, a seeded random policy, mixed
quality, a trained planner.

Exported actors themselves (the MLP, its file format, the built-in ones) live in
`trajplan.actors`.

Every policy follows the `Policy` protocol: `reset(seed)` at the start of an episode and
`act(obs)` for one observation. `make_policy` turns a command-line string into one.
`BatchedActor` and `OneEpisode` give actors and policies the batched interface of the
planner, so that `trajplan.rollout.rollout` plays them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from trajplan.actors import LEVELS, Actor, builtin_actor, load_actor
from trajplan.envs import check_fits
from trajplan.errors import TrajplanError


@runtime_checkable
class Policy(Protocol):
    """What `trajplan.collect` needs from a behaviour policy."""

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


class BatchedActor:
    """An exported actor (a BC policy, a SAC actor) for E episodes in lockstep: the batched
    interface of `trajplan.planner.Planner` that `trajplan.rollout.rollout` drives.

    noise > 0: Gaussian noise of `noise` times each action's half range is added, clipped to
    the bounds, as a prior's noisy candidates get in the planner (`plan.prior_noise`); each
    episode draws it from its own generator, seeded with the episode's seed.
    """

    def __init__(self, actor: Actor, noise: float = 0.0) -> None:
        if not (np.isfinite(noise) and noise >= 0):
            raise TrajplanError(f"action noise must be >= 0, got {noise}")
        self.actor, self.noise = actor, float(noise)
        self.low = np.asarray(actor.action_low, dtype=np.float64)
        self.high = np.asarray(actor.action_high, dtype=np.float64)
        self.generators: list[np.random.Generator] = []

    @property
    def n_envs(self) -> int:
        return len(self.generators)

    def reset(self, n_envs: int, seeds: Any = None) -> None:
        seeds = range(n_envs) if seeds is None else seeds
        self.generators = [np.random.default_rng(int(s)) for s in seeds]

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Observations [E, o] -> actions [E, a] (float64)."""
        act = self.actor.act(obs).astype(np.float64)
        if self.noise > 0:
            eps = np.stack([g.standard_normal(act.shape[1]) for g in self.generators])  # [E, a]
            half = 0.5 * (self.high - self.low)
            act = np.clip(act + self.noise * half * eps, self.low, self.high)
        return act

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        pass

    def drop(self, keep: np.ndarray) -> None:
        self.generators = [g for g, k in zip(self.generators, keep, strict=True) if k]


class OneEpisode:
    """A `Policy` in the batched interface `trajplan.rollout.rollout` drives, for a batch of
    one episode: behaviour policies keep one episode's state, so their episodes run one
    after another (`trajplan.rollout.play_policy`)."""

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


class PlannerPolicy:
    """A trajplan planner (`trajplan.planner.Planner`) as a one-episode-at-a-time `Policy`.

    The planner keeps a context of executed transitions, which `observe` feeds it; it sees
    the model's view of the observation (Ant: the first 27 dims, `obs_keep`).
    """

    name = "trajplan-planner"

    def __init__(self, planner: Any, obs_keep: int | None = None) -> None:
        self.planner = planner
        self.obs_keep = obs_keep

    def _view(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        return (obs[: self.obs_keep] if self.obs_keep else obs)[None]  # [1, o]

    def reset(self, seed: int | None) -> None:
        self.planner.reset(1, [0 if seed is None else seed])

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.planner.act(self._view(obs))[0]

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: float) -> None:
        self.planner.observe(self._view(obs), np.asarray(action)[None], np.array([reward]))


def planner_policy(run_dir: Path, env_name: str) -> Policy:
    """A trained trajplan run directory as behaviour policy: its planner with the run's
    plan config, on CPU/GPU as available, wrapped in `PlannerPolicy`."""
    from trajplan.checkpoint import load_checkpoint
    from trajplan.envs import resolve_env
    from trajplan.evaluate import check_env_matches
    from trajplan.planner import Planner

    ckpt = load_checkpoint(run_dir)
    check_env_matches(ckpt.model, env_name, ckpt.env or None)
    planner = Planner(ckpt.model, ckpt.discretizer, ckpt.config.plan)
    return PlannerPolicy(planner, obs_keep=resolve_env(env_name).obs_keep)


def make_policy(spec: str, env_name: str, env: gym.Env) -> Policy:
    """Turn a --policy string into a Policy for `env` (made for env_name).

    spec: "random"; "medium" / "expert" (the built-in actor of this env); a path to an
    exported actor (*.actor.safetensors); or a trajplan checkpoint directory (the planner).
    """
    if spec == "random":
        return RandomPolicy(env.action_space)
    path = Path(spec).expanduser()
    if spec in LEVELS:
        path = builtin_actor(env_name, spec)
    elif path.is_dir():
        return planner_policy(path, env_name)
    elif not (path.suffix == ".safetensors" or path.exists()):
        raise TrajplanError(
            f"unknown policy {spec!r}: use 'random', 'medium', 'expert', a path to an "
            "exported actor (.actor.safetensors) or a trajplan checkpoint directory"
        )
    actor = load_actor(path)
    check_fits(env, (actor.obs_dim, actor.act_dim), f"policy {spec}", actor.env_id, view=False)
    level = actor.meta.get("level") or (spec if spec in LEVELS else None)
    algorithm = str(actor.meta.get("algorithm", "sac")).split()[0]  # "td3 (stable-baselines3)"
    return ActorPolicy(actor, f"{algorithm}-{level}" if level else "actor")
