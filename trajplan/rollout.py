"""One loop that plays a batch of episodes in lockstep with a batched policy.

The policy is a `trajplan.planner.Planner` or anything with its batched interface
(`trajplan.policies.BatchedActor`): `reset(n, seeds)`, `act(obs) -> actions`,
`observe(obs, actions, rewards)`, `drop(keep)`, and optionally `predictions()` (what a
planner expected of the step it acted on). Episode i is reset with seeds[i]; a finished
episode leaves the batch. A `VideoRecorder` rides on the loop and films the episodes it names.
Evaluation (`trajplan.evaluate`) plays planners and BC actors through it, and behaviour
policies (`play_policy`: the returns of exported actors) play through it one episode at a time.

Dataset collection (`trajplan.collect.record_episodes`) keeps a loop of its own, for three
reasons. It plays episodes until a total number of steps and cuts the last one there, so the
number of episodes is known only at the end and they cannot start as one batch. Its behaviour
policies (`MixedPolicy`, `RandomPolicy`, `PlannerPolicy`) hold one episode's random state, so
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

from trajplan.envs import make_env, obs_view, resolve_env
from trajplan.policies import OneEpisode, Policy
from trajplan.scores import References, references_for
from trajplan.video import VideoRecorder, release


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
    prior_holds: int | None = None  # steps the margin rule kept the prior's plan (prior_margin)


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
    envs = [
        recorder.make_env(env_name, episode_steps)
        if recorder is not None and recorder.records(i)
        else make_env(env_name, max_episode_steps=episode_steps)
        for i in range(len(seeds))
    ]
    try:
        obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)])
        for env, s in zip(envs, seeds, strict=True):
            env.action_space.seed(int(s))
        if recorder is not None:
            for i, env in enumerate(envs):
                recorder.capture(i, env)
        planner.reset(len(seeds), seeds)
        alive = list(range(len(seeds)))  # episode indices still running, planner order
        results: dict[int, EpisodeResult] = {
            i: EpisodeResult(int(s), 0.0, 0, None, False) for i, s in enumerate(seeds)
        }
        if sink is not None:
            sink.extend(results.values())
        t = 0
        while alive:
            t0 = time.perf_counter()
            seen = obs_view(info, obs) if view else obs  # [E, o]
            actions = planner.act(seen)  # [E, a]
            pred = planner.predictions() if hasattr(planner, "predictions") else None
            next_obs, rewards, done = [], np.zeros(len(alive)), np.zeros(len(alive), bool)
            for j, i in enumerate(alive):
                o2, r, term, trunc, _ = envs[i].step(actions[j])
                res = results[i]
                if pred is not None:
                    res.pred_rewards.append(float(pred[0][j]))
                    res.pred_returns.append(float(pred[1][j]))
                    if len(pred) > 2 and pred[2] is not None:
                        res.prior_steps = (res.prior_steps or 0) + int(pred[2][j])
                    if len(pred) > 3 and pred[3] is not None:
                        res.prior_holds = (res.prior_holds or 0) + int(pred[3][j])
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
            planner.observe(seen, actions, rewards)
            dt = time.perf_counter() - t0
            if on_step is not None:
                rets = np.array([results[i].ret for i in alive])
                on_step(
                    StepInfo(
                        t,
                        [results[i].seed for i in alive],
                        rewards,
                        rets,
                        [refs.score(x) for x in rets],
                        1000.0 * dt / len(alive),
                        done.copy(),
                    )
                )
            obs = np.stack(next_obs)[~done]
            if done.any():
                planner.drop(~done)
                alive = [i for i, d in zip(alive, done, strict=True) if not d]
            t += 1
    finally:
        for env in envs:
            env.close()
        if recorder is not None:
            recorder.close()
            envs.clear()
            release()  # free the GL objects before any other env renders
    for res in results.values():
        res.score = refs.score(res.ret)
    return [results[i] for i in range(len(seeds))]


def play_policy(policy: Policy, env_name: str, seeds: Sequence[int]) -> list[EpisodeResult]:
    """Whole episodes of a behaviour `Policy` on whole observations, one after another
    (episode i reset with seeds[i]), scored with the env's D4RL references."""
    refs = references_for(env_name)
    return [rollout(OneEpisode(policy), env_name, [s], refs, view=False)[0] for s in seeds]
