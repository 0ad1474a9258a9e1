"""One loop that plays a batch of episodes in lockstep with a batched policy.

The policy is a `trajplan.planner.Planner` or anything with its batched interface
(`trajplan.model.actor.BatchedActor`): `reset(n, seeds)`, `act(obs) -> actions`,
`observe(obs, actions, rewards)`, `drop(keep)`, and optionally `predictions()` (what a
planner expected of the step it acted on). Episode i is reset with seeds[i]; a finished
episode leaves the batch. A `VideoRecorder` rides on the loop and films the episodes it names.
Evaluation (`trajplan.evaluation.evaluate`) plays planners and BC actors through it, and behaviour
policies (`trajplan.behaviour.policies.play_policy`) play through it one episode at a time.

Dataset collection (`trajplan.behaviour.collect.record_episodes`) keeps a loop of its own, for three
reasons. It plays episodes until a total number of steps and cuts the last one there, so the
number of episodes is known only at the end and they cannot start as one batch. Its behaviour
policies (`MixedPolicy`, `RandomPolicy`, a run's `Agent`) hold one episode's random state, so
its episodes run one after another; through this loop every episode would make its own env
(thousands for a random policy's short episodes), slowing collection down. And it records
every raw observation and action in the env's dtypes, which this loop does not keep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trajplan.envs.references import References
from trajplan.envs.registry import make_env, obs_view, resolve_env
from trajplan.envs.video import VideoRecorder, release


@dataclass
class StepInfo:
    """What one lockstep env step produced (for live displays)."""

    t: int  # env step index (0-based)
    seeds: list[int]  # seeds of the episodes that were stepped
    rewards: np.ndarray  # [E]
    returns: np.ndarray  # [E] returns so far
    scores: list[float | None]  # normalized returns so far
    ms_per_step: float  # planning + env time of this step, per episode
    done: np.ndarray  # [E] bool


@dataclass
class EpisodeResult:
    seed: int
    ret: float
    length: int
    score: float | None
    terminated: bool
    rewards: list[float] = field(default_factory=list)
    # what a planner predicted at every step (empty for policies that do not plan):
    pred_rewards: list[float] = field(default_factory=list)  # expected reward of the step
    pred_returns: list[float] = field(default_factory=list)  # score of the plan acted on
    prior_steps: int | None = None  # actions that were a prior policy's (plan.prior)
    # whether the goal was reached at any step (info["success"]); None: the env does not say
    success: bool | None = None


def rollout(
    planner: Any,
    env_name: str,
    seeds: Sequence[int],
    refs: References,
    episode_steps: int | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    recorder: VideoRecorder | None = None,
    sink: list[EpisodeResult] | None = None,
    view: bool = True,
) -> list[EpisodeResult]:
    """Play len(seeds) episodes in lockstep with one planner; returns them in seed order.

    With a `recorder`, the episodes it names (indices into seeds) are rendered into videos.
    `sink` receives the episodes as they start (and grow): what is left if it is stopped.
    view: the policy sees the model's view of observations (`envs.obs_view`: Ant without its
    contact forces); False: whole observations (behaviour policies).
    """
    info = resolve_env(env_name)
    envs = _make_envs(env_name, len(seeds), episode_steps, recorder)
    try:
        obs = _reset_envs(envs, seeds, recorder)  # [E, o]
        planner.reset(len(seeds), seeds)
        results = [EpisodeResult(int(s), 0.0, 0, None, False) for s in seeds]
        if sink is not None:
            sink.extend(results)
        alive = list(range(len(seeds)))  # episode indices still running, planner order
        t = 0
        while alive:
            t0 = time.perf_counter()
            seen = obs_view(info, obs) if view else obs  # [E, o]
            actions = planner.act(seen)  # [E, a]
            pred = planner.predictions() if hasattr(planner, "predictions") else None
            next_obs, rewards, done = _step_envs(envs, alive, results, actions, pred, recorder)
            planner.observe(seen, actions, rewards)
            dt = time.perf_counter() - t0
            if on_step is not None:
                on_step(_step_info(t, alive, results, rewards, done, refs, dt))
            obs = next_obs[~done]  # [E', o]: the episodes that go on
            if done.any():
                planner.drop(~done)
                alive = [i for i, d in zip(alive, done, strict=True) if not d]
            t += 1
    finally:
        _close_envs(envs, recorder)
    for res in results:
        res.score = refs.score(res.ret)
    return results


def _make_envs(
    env_name: str, n: int, episode_steps: int | None, recorder: VideoRecorder | None
) -> list[Any]:
    """One env per episode; the recorder makes (rendering) envs for the episodes it films."""
    return [
        recorder.make_env(env_name, episode_steps)
        if recorder is not None and recorder.records(i)
        else make_env(env_name, max_episode_steps=episode_steps)
        for i in range(n)
    ]


def _reset_envs(
    envs: list[Any], seeds: Sequence[int], recorder: VideoRecorder | None
) -> np.ndarray:
    """Reset env i and its action space with seeds[i]; first frames. Returns obs [E, o]."""
    obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)])
    for env, s in zip(envs, seeds, strict=True):
        env.action_space.seed(int(s))
    if recorder is not None:
        for i, env in enumerate(envs):
            recorder.capture(i, env)
    return obs


def _step_envs(
    envs: list[Any],
    alive: list[int],
    results: list[EpisodeResult],
    actions: np.ndarray,
    pred: tuple | None,
    recorder: VideoRecorder | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step each alive episode with its action (row j of actions [E, a] for episode alive[j])
    and add the step, and what the planner predicted of it, to its result.

    pred: the planner's `predictions()`, rows [E]: expected rewards, plan scores and
    optionally whether the prior's plan was acted on. A goal env's info["success"] marks the
    episode a success once it is true. Returns next obs [E, o], rewards [E] and done [E]
    (terminated or truncated).
    """
    next_obs, rewards, done = [], np.zeros(len(alive)), np.zeros(len(alive), bool)
    for j, i in enumerate(alive):
        o2, r, term, trunc, info = envs[i].step(actions[j])
        res = results[i]
        if "success" in info:
            res.success = bool(res.success) or bool(info["success"])
        if pred is not None:
            res.pred_rewards.append(float(pred[0][j]))
            res.pred_returns.append(float(pred[1][j]))
            if len(pred) > 2 and pred[2] is not None:
                res.prior_steps = (res.prior_steps or 0) + int(pred[2][j])
        res.ret += float(r)
        res.length += 1
        res.rewards.append(float(r))
        res.terminated = bool(term)
        rewards[j], done[j] = r, term or trunc
        next_obs.append(o2)
        if recorder is not None:
            recorder.capture(i, envs[i])
            if done[j]:
                recorder.finish(i)
    return np.stack(next_obs), rewards, done


def _step_info(
    t: int,
    alive: list[int],
    results: list[EpisodeResult],
    rewards: np.ndarray,
    done: np.ndarray,
    refs: References,
    dt: float,
) -> StepInfo:
    """StepInfo of step t for the episodes in alive (rewards, done [E]; dt seconds)."""
    rets = np.array([results[i].ret for i in alive])  # [E]
    return StepInfo(
        t,
        [results[i].seed for i in alive],
        rewards,
        rets,
        [refs.score(x) for x in rets],
        1000.0 * dt / len(alive),
        done.copy(),
    )


def _close_envs(envs: list[Any], recorder: VideoRecorder | None) -> None:
    """Close every env; with a recorder, close it and free the GL objects it rendered with."""
    for env in envs:
        env.close()
    if recorder is not None:
        recorder.close()
        envs.clear()
        release()  # free the GL objects before any other env renders
