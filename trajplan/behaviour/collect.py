"""Collect D4RL-style Minari datasets locally: roll out a behaviour policy, or convert replay data.

`collect` runs a `Policy` (random, an exported SAC actor, ...) in a Gymnasium env for a number
of steps, whole episodes with seeds seed, seed+1, ... (`record_episodes`: a loop of its own,
see trajplan.envs.rollout for why), and writes a Minari dataset through
`trajplan.data.install.create_dataset` (episode seeds, env spec, reference scores, algorithm
name). The same arguments give the same dataset. `from_replay` turns the transitions a SAC run saved
(scripts/train_behavior.py) into a `medium-replay` dataset. `medium-expert` needs no copy:
load the id `A+B` (e.g. `.../medium-v0+.../expert-v0`) to get the union.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np

from trajplan.behaviour.policies import MixedPolicy, Policy, make_policy, play_policy
from trajplan.data.install import create_dataset
from trajplan.data.store import check_dataset_id, datasets_root
from trajplan.envs.mazes import with_current_goal
from trajplan.envs.registry import EnvInfo, make_env, resolve_env
from trajplan.errors import TrajplanError
from trajplan.guards import check_disk
from trajplan.progress import Progress
from trajplan.runtime import Stopped, check_writable, sigterm_as_interrupt

Episode = dict[str, np.ndarray]


def record_episodes(
    env_name: str,
    policy: Policy,
    steps: int,
    seed: int = 0,
    max_episode_steps: int | None = None,
    progress: bool = True,
) -> tuple[list[Episode], list[int | None]]:
    """Run `policy` for `steps` env steps in whole episodes; the last one is truncated at `steps`.

    Episode i is reset with seed `seed + i` (env and policy). Returns the episodes
    (observations [T+1, o], actions [T, a], rewards [T], terminations [T], truncations [T])
    and their seeds. Envs with a collection task (`EnvInfo.collect_kwargs`: the mazes) are
    played in it, as D4RL's maze2d data: goals anywhere, a new goal on arrival, and every goal
    reached ends an episode (a truncation); the next episode goes on from there with the new
    goal and no reset (seed None; the policy is still reset with seed + i). Termination and
    the time limit end an episode as usual, and the next one starts with a reset.
    """
    if steps < 1:
        raise TrajplanError(f"steps must be >= 1, got {steps}")
    info = resolve_env(env_name)
    cut_at_goal = info.collect_kwargs is not None
    env = make_env(env_name, max_episode_steps=max_episode_steps, env_kwargs=info.collect_kwargs)
    episodes: list[Episode] = []
    seeds: list[int | None] = []
    done_steps = 0
    obs = None  # the next episode's start when it goes on without a reset
    try:
        with Progress(f"collect {policy.name}", steps, enabled=progress) as bar:
            while done_steps < steps:
                ep_seed = seed + len(episodes)
                policy.reset(ep_seed)
                seeds.append(ep_seed if obs is None else None)
                if obs is None:
                    obs, _ = env.reset(seed=ep_seed)
                episode, obs = _play_episode(env, policy, obs, steps - done_steps, cut_at_goal)
                episodes.append(episode)
                done_steps += len(episode["actions"])
                bar.update(completed=done_steps, info=f"{len(episodes)} episodes")
    finally:
        env.close()
    return episodes, seeds


def _play_episode(
    env: gym.Env, policy: Policy, obs: np.ndarray, budget: int, cut_at_goal: bool
) -> tuple[Episode, np.ndarray | None]:
    """One episode from `obs`, at most `budget` steps (cut there), in the env's dtypes.

    With cut_at_goal, reaching the goal (info["success"]) ends the episode. Returns the
    episode and the next episode's first observation when it goes on without a reset (the
    goal was reached: the same state, the env's new goal), else None.
    """
    obs_dtype, act_dtype = env.observation_space.dtype, env.action_space.dtype
    observations, actions, rewards, terms, truncs = [obs], [], [], [], []
    reached = False
    while True:
        act = np.asarray(policy.act(obs), dtype=act_dtype)
        prev = obs
        obs, reward, term, trunc, info = env.step(act)
        policy.observe(prev, act, float(reward))
        reached = cut_at_goal and bool(info.get("success")) and not (term or trunc)
        trunc = trunc or reached or (len(actions) + 1 == budget and not term)
        observations.append(obs)
        actions.append(act)
        rewards.append(reward)
        terms.append(term)
        truncs.append(trunc)
        if term or trunc:
            break
    episode = {
        "observations": np.asarray(observations, dtype=obs_dtype),  # [T+1, o]
        "actions": np.asarray(actions, dtype=act_dtype),  # [T, a]
        "rewards": np.asarray(rewards, dtype=np.float64),  # [T]
        "terminations": np.asarray(terms, dtype=bool),
        "truncations": np.asarray(truncs, dtype=bool),
    }
    return episode, with_current_goal(env, obs) if reached else None


def episode_returns(env_name: str, policy: Policy, episodes: int, seed: int = 0) -> np.ndarray:
    """[episodes] undiscounted returns of whole episodes (episode i seeded seed + i)."""
    played = play_policy(policy, env_name, range(seed, seed + episodes))
    return np.array([ep.ret for ep in played], dtype=np.float64)


def collect(
    env_name: str,
    policy: str | Policy,
    steps: int,
    dataset_id: str | None = None,
    seed: int = 0,
    force: bool = False,
    max_episode_steps: int | None = None,
    description: str | None = None,
    progress: bool = True,
    random_rate: tuple[float, float] = (0.0, 0.0),
    noise: tuple[float, float] | None = None,
) -> Path:
    """Roll out a policy and write the Minari dataset `dataset_id`; returns its folder.

    policy: a `Policy`, or a string for `make_policy` ("random", "medium", "expert",
    "waypoint", a path to an exported actor). dataset_id None: `default_dataset_id`. An
    existing id is an error unless `force`. Nothing is written when anything fails (or on
    Ctrl-C or SIGTERM, which raise `trajplan.runtime.Stopped`) before the dataset is complete.
    random_rate / noise (LO, HI): make a mixed-quality dataset (`MixedPolicy`): every
    episode takes random actions at a rate drawn from U(random_rate) and adds Gaussian noise
    of a std drawn from U(noise) (in half-widths of the action box) to the others. noise
    None: the policy's `default_noise` (the waypoint controller: 0.5, as Minari's), else 0.
    Mazes are collected in their collection task (`record_episodes`), and the dataset
    records that task as its env and the registry's as its eval env.
    """
    info = resolve_env(env_name)
    _check_values(steps, random_rate, noise)
    if dataset_id is None:
        dataset_id = default_dataset_id(env_name, policy)
    probe = make_env(env_name)
    try:
        obs_dim = int(np.prod(probe.observation_space.shape or (1,)))
        act_dim = int(np.prod(probe.action_space.shape or (1,)))
        if isinstance(policy, str):
            policy = make_policy(policy, env_name, probe)
        if noise is None:
            noise = (getattr(policy, "default_noise", 0.0),) * 2
        if random_rate[1] > 0 or noise[1] > 0:
            policy = MixedPolicy(policy, probe.action_space, random_rate, noise)
    finally:
        probe.close()
    _check_new(dataset_id, force)
    size = dataset_bytes(steps, obs_dim, act_dim)  # before the rollout, not after it
    check_disk(datasets_root(), 2 * size, size, f"dataset {dataset_id} ({steps:,} steps)")
    with sigterm_as_interrupt(), _ctrl_c_as_stopped():  # the staged files are removed
        episodes, seeds = record_episodes(
            env_name, policy, steps, seed, max_episode_steps, progress
        )  # fmt: skip
        return create_dataset(
            dataset_id,
            episodes,
            info.gym_id,
            seeds=seeds,
            ref_min=info.ref_min,
            ref_max=info.ref_max,
            algorithm_name=policy.name,
            description=description or _describe(info, policy, episodes, seed, random_rate, noise),
            force=force,
            env_kwargs=info.collect_kwargs,
        )


@contextlib.contextmanager
def _ctrl_c_as_stopped() -> Iterator[None]:
    """Ctrl-C as SIGTERM is: `Stopped` (exit 130), which the CLI reports as "stopped: no
    dataset written" (a bare KeyboardInterrupt said nothing about the dataset)."""
    try:
        yield
    except Stopped:
        raise
    except KeyboardInterrupt:
        raise Stopped(signal.SIGINT) from None


def default_dataset_id(env_name: str, policy: str | Policy) -> str:
    """local/ENV/POLICY-v0 for a policy given by name (mazes: local/pointmaze/large-v0 for the
    waypoint controller, as D4RL's maze2d; local/antmaze/umaze-random-v0); else an error."""
    name = policy if isinstance(policy, str) else policy.name
    if not name.replace("-", "").isalnum():
        raise TrajplanError(f"name the dataset of policy {name!r}: give --dataset-id")
    info = resolve_env(env_name)
    domain, _, task = info.name.partition("-")
    if not task:  # hopper, ...
        return check_dataset_id(f"local/{info.name}/{name}-v0")
    return check_dataset_id(f"local/{domain}/{task}{'' if name == 'waypoint' else '-' + name}-v0")


def _describe(
    info: EnvInfo,
    policy: Policy,
    episodes: list[Episode],
    seed: int,
    random_rate: tuple[float, float],
    noise: tuple[float, float],
) -> str:
    """The dataset's description: what was collected, how, and with which seeds."""
    n_steps = sum(len(ep["actions"]) for ep in episodes)
    text = (
        f"{len(episodes)} episodes ({n_steps} steps) of the {policy.name} policy in "
        f"{info.gym_id}, episode seeds {seed}..{seed + len(episodes) - 1}; collected with "
        "`trajplan data collect`."
    )
    if info.collect_kwargs is not None:
        text += (
            " A goal maze, collected as D4RL's maze2d data: goals anywhere, a new goal on "
            "arrival, every goal reached ends an episode (a truncation), and the next goes on "
            "from there without an env reset (the env is reset, with the episode's seed, only "
            "at the start and after a time limit)."
        )
    if isinstance(policy, MixedPolicy):
        parts = []
        if random_rate[1] > 0:
            parts.append(
                f"random actions at a rate drawn from U({random_rate[0]:g}, {random_rate[1]:g})"
            )
        if noise[1] > 0:
            parts.append(
                f"Gaussian action noise of std drawn from U({noise[0]:g}, {noise[1]:g}) "
                "(half-widths of the action box)"
            )
        text += f" Per episode, from its seed: {' and '.join(parts)}."
    return text


def replay_episodes(path: str | Path) -> list[Episode]:
    """Split a replay file of scripts/train_behavior.py into episodes (collection order)."""
    path = Path(path)
    if not path.is_file():
        raise TrajplanError(f"replay file not found: {path}")
    try:
        with np.load(path) as z:
            data = {
                k: z[k]
                for k in (
                    "observations",
                    "next_observations",
                    "actions",
                    "rewards",
                    "terminations",
                    "truncations",
                )
            }
    except (OSError, ValueError, KeyError) as exc:
        raise TrajplanError(f"{path} is not a replay file of train_behavior.py: {exc}") from exc
    ends = np.flatnonzero(data["terminations"] | data["truncations"])  # last step of episodes
    if len(ends) == 0 or ends[-1] != len(data["rewards"]) - 1:
        raise TrajplanError(f"{path}: the last transition does not end an episode")
    starts = np.concatenate([[0], ends[:-1] + 1])
    episodes = []
    for s, e in zip(starts, ends + 1, strict=True):
        obs = np.concatenate([data["observations"][s:e], data["next_observations"][e - 1 : e]])
        episodes.append(
            {
                "observations": obs,  # [T+1, o]
                "actions": data["actions"][s:e],
                "rewards": data["rewards"][s:e].astype(np.float64),
                "terminations": data["terminations"][s:e],
                "truncations": data["truncations"][s:e],
            }
        )
    return episodes


def from_replay(
    env_name: str,
    replay_path: str | Path,
    dataset_id: str,
    max_steps: int | None = None,
    force: bool = False,
    algorithm_name: str = "sac-replay",
) -> Path:
    """Write the transitions of a SAC replay file as a Minari dataset (`medium-replay`).

    max_steps keeps only the first episodes covering at most that many steps (the replay up
    to an earlier checkpoint). Replay episodes carry no seeds: SAC resets its env unseeded.
    """
    info = resolve_env(env_name)
    _check_new(dataset_id, force)
    episodes = replay_episodes(replay_path)
    if max_steps is not None:
        lengths = np.cumsum([len(ep["actions"]) for ep in episodes])
        episodes = episodes[: int(np.searchsorted(lengths, max_steps, side="right"))]
        if not episodes:
            raise TrajplanError(f"max_steps={max_steps} is shorter than the first episode")
    env = make_env(env_name)
    try:
        for name, space, arr in (
            ("observation", env.observation_space, "observations"),
            ("action", env.action_space, "actions"),
        ):
            if episodes[0][arr].shape[1:] != space.shape:
                raise TrajplanError(
                    f"{replay_path}: {name} shape {episodes[0][arr].shape[1:]} "
                    f"does not match {info.gym_id} {space.shape}"
                )
            dtype = space.dtype
            for ep in episodes:
                ep[arr] = ep[arr].astype(dtype)
    finally:
        env.close()
    n_steps = sum(len(ep["actions"]) for ep in episodes)
    return create_dataset(
        dataset_id,
        episodes,
        info.gym_id,
        ref_min=info.ref_min,
        ref_max=info.ref_max,
        algorithm_name=algorithm_name,
        description=(
            f"The replay buffer of a SAC run in {info.gym_id}: {len(episodes)} "
            f"episodes ({n_steps} steps) in collection order, from {Path(replay_path).name}."
        ),
        force=force,
    )


def _check_values(
    steps: int, random_rate: tuple[float, float], noise: tuple[float, float] | None
) -> None:
    """The collection's own values, before any env is made: random-action rates in
    [0, 1], noise stds >= 0, each range LO <= HI."""
    if steps < 1:
        raise TrajplanError(f"--steps must be at least 1, got {steps}")
    lo, hi = random_rate
    if not 0.0 <= lo <= hi <= 1.0:
        raise TrajplanError(f"--mix-random takes rates in [0, 1], LO <= HI; got {lo:g}:{hi:g}")
    if noise is not None and not 0.0 <= noise[0] <= noise[1]:
        raise TrajplanError(
            f"--noise takes stds >= 0 (half-widths of the action box), LO <= HI; got "
            f"{noise[0]:g}:{noise[1]:g}"
        )


def _check_new(dataset_id: str, force: bool) -> None:
    """Fail before the (slow) rollout when the dataset exists and force is off, or when the
    datasets folder cannot be written."""
    if not force and (datasets_root() / check_dataset_id(dataset_id)).exists():
        raise TrajplanError(f"dataset {dataset_id!r} already exists: pass --force to replace it")
    check_writable(datasets_root(), "datasets folder (MINARI_DATASETS_PATH)")


def dataset_bytes(steps: int, obs_dim: int, act_dim: int) -> int:
    """A Minari dataset of `steps` steps: observations (one more per episode), actions,
    rewards and flags, at most 8 bytes a number, plus HDF5 and metadata overhead."""
    return steps * (2 * obs_dim + act_dim + 3) * 8 + 2**16
