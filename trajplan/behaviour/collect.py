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

from pathlib import Path

import numpy as np

from trajplan.behaviour.policies import MixedPolicy, Policy, make_policy, play_policy
from trajplan.data.install import create_dataset
from trajplan.data.store import check_dataset_id, datasets_root
from trajplan.envs.registry import make_env, resolve_env
from trajplan.errors import TrajplanError
from trajplan.progress import Progress
from trajplan.runtime import check_writable

Episode = dict[str, np.ndarray]


def record_episodes(
    env_name: str,
    policy: Policy,
    steps: int,
    seed: int = 0,
    max_episode_steps: int | None = None,
    progress: bool = True,
) -> tuple[list[Episode], list[int]]:
    """Run `policy` for `steps` env steps in whole episodes; the last one is truncated at `steps`.

    Episode i is reset with seed `seed + i` (env and policy). Returns the episodes
    (observations [T+1, o], actions [T, a], rewards [T], terminations [T], truncations [T])
    and their seeds.
    """
    if steps < 1:
        raise TrajplanError(f"steps must be >= 1, got {steps}")
    env = make_env(env_name, max_episode_steps=max_episode_steps)
    obs_dtype, act_dtype = env.observation_space.dtype, env.action_space.dtype
    episodes: list[Episode] = []
    seeds: list[int] = []
    done_steps = 0
    try:
        with Progress(f"collect {policy.name}", steps, enabled=progress) as bar:
            while done_steps < steps:
                ep_seed = seed + len(episodes)
                policy.reset(ep_seed)
                obs, _ = env.reset(seed=ep_seed)
                observations, actions, rewards, terms, truncs = [obs], [], [], [], []
                while True:
                    act = np.asarray(policy.act(obs), dtype=act_dtype)
                    prev = obs
                    obs, reward, term, trunc, _ = env.step(act)
                    policy.observe(prev, act, float(reward))
                    done_steps += 1
                    trunc = trunc or (done_steps == steps and not term)
                    observations.append(obs)
                    actions.append(act)
                    rewards.append(reward)
                    terms.append(term)
                    truncs.append(trunc)
                    if term or trunc:
                        break
                episodes.append(
                    {
                        "observations": np.asarray(observations, dtype=obs_dtype),  # [T+1, o]
                        "actions": np.asarray(actions, dtype=act_dtype),  # [T, a]
                        "rewards": np.asarray(rewards, dtype=np.float64),  # [T]
                        "terminations": np.asarray(terms, dtype=bool),
                        "truncations": np.asarray(truncs, dtype=bool),
                    }
                )
                seeds.append(ep_seed)
                bar.update(completed=done_steps, info=f"{len(episodes)} episodes")
    finally:
        env.close()
    return episodes, seeds


def episode_returns(env_name: str, policy: Policy, episodes: int, seed: int = 0) -> np.ndarray:
    """[episodes] undiscounted returns of whole episodes (episode i seeded seed + i)."""
    played = play_policy(policy, env_name, range(seed, seed + episodes))
    return np.array([ep.ret for ep in played], dtype=np.float64)


def collect(
    env_name: str,
    policy: str | Policy,
    steps: int,
    dataset_id: str,
    seed: int = 0,
    force: bool = False,
    max_episode_steps: int | None = None,
    description: str | None = None,
    progress: bool = True,
    random_rate: tuple[float, float] = (0.0, 0.0),
    noise: tuple[float, float] = (0.0, 0.0),
) -> Path:
    """Roll out a policy and write the Minari dataset `dataset_id`; returns its folder.

    policy: a `Policy`, or a string for `make_policy` ("random", "medium", "expert", a path
    to an exported actor). An existing id is an error unless `force`. Nothing is written
    when anything fails (or on Ctrl-C) before the dataset is complete.
    random_rate / noise (LO, HI): make a mixed-quality dataset (`MixedPolicy`): every
    episode takes random actions at a rate drawn from U(random_rate) and adds Gaussian noise
    of a std drawn from U(noise) (in half-widths of the action box) to the others.
    """
    info = resolve_env(env_name)
    probe = make_env(env_name)
    try:
        if isinstance(policy, str):
            policy = make_policy(policy, env_name, probe)
        if random_rate[1] > 0 or noise[1] > 0:
            policy = MixedPolicy(policy, probe.action_space, random_rate, noise)
    finally:
        probe.close()
    _check_new(dataset_id, force)
    episodes, seeds = record_episodes(env_name, policy, steps, seed, max_episode_steps, progress)
    n_steps = sum(len(ep["actions"]) for ep in episodes)
    description = description or (
        f"{len(episodes)} episodes ({n_steps} steps) of the {policy.name} policy in "
        f"{info.gym_id}, episode seeds {seed}..{seed + len(episodes) - 1}; collected with "
        "`trajplan data collect`."
        + (
            f" Mixed quality: per episode, random actions at a rate drawn from "
            f"U({random_rate[0]:g}, {random_rate[1]:g}) and Gaussian action noise of std drawn "
            f"from U({noise[0]:g}, {noise[1]:g}) (half-widths of the action box), both from "
            "the episode seed."
            if isinstance(policy, MixedPolicy)
            else ""
        )
    )
    return create_dataset(
        dataset_id,
        episodes,
        info.gym_id,
        seeds=seeds,
        ref_min=info.ref_min,
        ref_max=info.ref_max,
        algorithm_name=policy.name,
        description=description,
        force=force,
    )


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


def _check_new(dataset_id: str, force: bool) -> None:
    """Fail before the (slow) rollout when the dataset exists and force is off, or when the
    datasets folder cannot be written."""
    if not force and (datasets_root() / check_dataset_id(dataset_id)).exists():
        raise TrajplanError(f"dataset {dataset_id!r} already exists: pass --force to replace it")
    check_writable(datasets_root(), "datasets folder (MINARI_DATASETS_PATH)")
