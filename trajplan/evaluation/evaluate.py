"""Evaluate a trained run by acting in its environment (docs/method.md, Scores).

`run_episodes` plays N episodes (seeds seed, seed+1, ...) in lockstep through one batched
`Planner` (or a BC run's actor): all beams of all episodes share every model call, and a
finished episode leaves the batch. Episode e is reset with seeds[e] and samples from a
generator seeded with seeds[e], so its actions are the same whether it runs alone or with
others. `episode_steps` caps episodes for quick looks: such scores are marked as not
comparable to full-length (1000-step) ones.

The pieces live apart: the loop in `trajplan.envs.rollout`, normalized scores and their
references in `trajplan.envs.references`, eval.json / eval.png in
`trajplan.evaluation.evalfiles`. This module
checks the inputs, drives the loop and summarizes it (`EvalResult`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from trajplan.config import PlanConfig
from trajplan.configs import apply_overrides
from trajplan.configs.convert import to_dict
from trajplan.data.tokens import Discretizer
from trajplan.envs.references import References, references_for
from trajplan.envs.registry import make_env, resolve_env
from trajplan.envs.rollout import EpisodeResult, StepInfo, rollout
from trajplan.envs.video import VideoRecorder
from trajplan.errors import TrajplanError
from trajplan.evaluation.evalfiles import EvalResult
from trajplan.model.gpt import TrajectoryGPT
from trajplan.planner import Planner, check_plan_config
from trajplan.planner.prior import load_prior
from trajplan.progress import Progress
from trajplan.runs.checkpoint import find_latest_run
from trajplan.runs.load import Run, run_kind
from trajplan.runtime import Stopped, resolve_device


class EvalInterrupted(Stopped):
    """Ctrl-C or SIGTERM during an evaluation; `result` holds the episodes so far, `path`
    the eval.json they were saved to (by `evaluate_runs`), if any."""

    def __init__(self, result: EvalResult, signum: int) -> None:
        super().__init__(signum)
        self.result = result
        self.path: Path | None = None


def evaluate(
    model: TrajectoryGPT,
    discretizer: Discretizer,
    env: str,
    plan_cfg: PlanConfig,
    n_episodes: int = 10,
    seed: int = 0,
    episode_steps: int | None = None,
    device: str | torch.device = "auto",
    refs: References | None = None,
    progress: bool = True,
    on_step: Callable[[StepInfo], None] | None = None,
    recorder: VideoRecorder | None = None,
    seeds: Sequence[int] | None = None,
) -> EvalResult:
    """Plan n_episodes episodes (seeds seed..seed+n-1) together and summarize them.

    `seeds` (optional) lists the episode seeds instead. With a `recorder`, the episodes it
    names are rendered into videos (see `rollout`).
    """
    check_plan_config(plan_cfg, model)
    dev = resolve_device(device) if isinstance(device, str) else device
    planner = Planner(model, discretizer, plan_cfg, dev)
    return evaluate_policy(
        planner,
        env,
        n_episodes=n_episodes,
        seed=seed,
        episode_steps=episode_steps,
        refs=refs,
        progress=progress,
        on_step=on_step,
        recorder=recorder,
        seeds=seeds,
        plan=to_dict(plan_cfg),
    )


def check_episode_args(n_episodes: int, episode_steps: int | None) -> None:
    if n_episodes < 1:
        raise TrajplanError(f"--episodes must be at least 1, got {n_episodes}")
    if episode_steps is not None and episode_steps < 1:
        raise TrajplanError(f"--episode-steps must be at least 1, got {episode_steps}")


def evaluate_policy(
    policy: Any,
    env: str,
    *,
    n_episodes: int = 10,
    seed: int = 0,
    episode_steps: int | None = None,
    refs: References | None = None,
    progress: bool = True,
    on_step: Callable[[StepInfo], None] | None = None,
    recorder: VideoRecorder | None = None,
    seeds: Sequence[int] | None = None,
    plan: dict[str, Any] | None = None,
    name: str | None = None,
) -> EvalResult:
    """Run a batched policy (a `Planner`, a `policies.BatchedActor`) for n_episodes episodes
    in lockstep and summarize them; `plan` is recorded as the planning config (None: none);
    `name` (the run's) heads the progress lines, so several runs' lines are told apart."""
    if seeds is not None:
        seeds, n_episodes = [int(s) for s in seeds], len(seeds)
    check_episode_args(n_episodes, episode_steps)
    info = resolve_env(env)
    refs = refs or references_for(env)
    seeds = seeds or [seed + i for i in range(n_episodes)]
    limit = episode_steps or _env_limit(env)
    steps = 0

    def track(info_: StepInfo) -> None:
        nonlocal steps
        steps += len(info_.seeds)
        early = int(info_.done.sum()) * (limit - info_.t - 1)  # steps that will not come
        bar.update(
            advance=len(info_.seeds),
            total=bar.total - early,
            info=f"mean return {float(info_.returns.mean()):.1f}",
        )
        if on_step is not None:
            on_step(info_)

    t0 = time.perf_counter()
    started: list[EpisodeResult] = []

    def result(episodes: list[EpisodeResult], interrupted: bool = False) -> EvalResult:
        return EvalResult(
            env=info.name,
            gym_id=info.gym_id,
            episodes=episodes,
            refs=refs,
            plan=plan or {},
            wall_s=time.perf_counter() - t0,
            env_steps=steps,
            episode_steps=episode_steps,
            interrupted=interrupted,
        )

    try:
        what = f"planning {name} on {info.name}" if name else f"planning {info.name}"
        with Progress(what, n_episodes * limit, enabled=progress) as bar:
            episodes = rollout(policy, env, seeds, refs, episode_steps, track, recorder, started)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM under sigterm_as_interrupt
        for ep in started:
            ep.score = refs.score(ep.ret)
        partial = result([ep for ep in started if ep.length > 0], interrupted=True)
        raise EvalInterrupted(partial, getattr(exc, "signum", 2)) from None
    return result(episodes)


def _env_limit(env: str) -> int:
    e = make_env(env)
    try:
        return int(e.spec.max_episode_steps or 1000) if e.spec is not None else 1000
    finally:
        e.close()


def run_episodes(
    run: Run,
    env: str | None = None,
    *,
    n_episodes: int = 10,
    seed: int = 0,
    episode_steps: int | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    on_step: Callable[[StepInfo], None] | None = None,
    recorder: VideoRecorder | None = None,
    seeds: Sequence[int] | None = None,
) -> EvalResult:
    """Evaluate a loaded run (`trajplan.runs.load_run`: a TT run plans, a BC run acts) in
    `env` (default: the run's own) on episodes seed..seed+n_episodes-1, or on `seeds`.
    Everything after env is by keyword."""
    env_name = env or run.env
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    policy = run.policy(env_name, dev)
    try:
        result = evaluate_policy(
            policy, env_name, n_episodes=n_episodes, seed=seed, episode_steps=episode_steps,
            refs=run.references(env_name), progress=progress, on_step=on_step,
            recorder=recorder, seeds=seeds, plan=run.settings(), name=run.run_dir.name,
        )  # fmt: skip
    except EvalInterrupted as stop:
        stop.result.checkpoint, stop.result.dataset_id = str(run.run_dir), run.dataset_id
        stop.result.weights = run.weights
        raise
    result.checkpoint, result.dataset_id = str(run.run_dir), run.dataset_id
    result.weights = run.weights
    return result


# -- command-line helpers ------------------------------------------------------------------


def resolve_run(checkpoint: str | Path | None, env: str | None, runs_root: str | Path) -> Path:
    """The run directory to use: --checkpoint as given, else the newest run for --env."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.exists():
            raise TrajplanError(f"checkpoint not found: {path}")
        return path
    if env is None:
        raise TrajplanError("give --checkpoint DIR or --env NAME (uses the newest run for it)")

    return Path(find_latest_run(resolve_env(env).name, runs_root=runs_root))


def with_overrides(cfg: PlanConfig, sets: Sequence[str] = (), **overrides: Any) -> PlanConfig:
    """A copy of cfg with every override that is not None applied, then the
    `plan.KEY=VALUE` strings of `sets` (the CLI's --set), then checked."""
    new = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    for item in sets:
        section, dot, rest = item.strip().partition(".")
        if section != "plan" or not dot or "=" not in rest:
            raise TrajplanError(
                f"--set {item!r}: plan and eval take plan.KEY=VALUE, e.g. plan.prior_noise=0.2"
            )
        apply_overrides(new, [rest])
    check_plan_config(new)
    if new.prior and new.prior != cfg.prior:  # a prior named now: absolute, and it must load
        new.prior = str(Path(new.prior).expanduser().resolve())
        load_prior(new.prior)
    if new.critic and new.critic != cfg.critic:  # the same for a critic (an IQL run)
        new.critic = str(Path(new.critic).expanduser().resolve())
        if run_kind(new.critic) != "iql":
            raise TrajplanError(f"plan.critic: {new.critic} is not an IQL run (trajplan iql)")
    return new
