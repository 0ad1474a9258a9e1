"""Evaluate a trained run by acting in its environment (docs/method.md, Scores).

`run_episodes` plays N episodes (seeds seed, seed+1, ...) in lockstep through one batched
`Planner` (or a BC run's actor): all beams of all episodes share every model call, and a
finished episode leaves the batch. Episode e is reset with seeds[e] and samples from a
generator seeded with seeds[e], so its actions are the same whether it runs alone or with
others. `episode_steps` caps episodes for quick looks: such scores are marked as not
comparable to full-length (1000-step) ones.

The pieces live apart: the loop in `trajplan.rollout`, normalized scores and their
references in `trajplan.scores`, eval.json / eval.png in `trajplan.report`. This module
checks the inputs, drives the loop and summarizes it (`EvalResult`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajplan.config import PlanConfig, apply_overrides, to_dict
from trajplan.envs import check_fits, make_env, resolve_env
from trajplan.errors import TrajplanError
from trajplan.model import TrajectoryGPT
from trajplan.planner import Planner, check_plan_config
from trajplan.progress import Progress
from trajplan.rollout import EpisodeResult, StepInfo, rollout
from trajplan.runtime import Stopped, resolve_device
from trajplan.scores import References, plan_diagnostics, references_for, stderr
from trajplan.tokens import Discretizer
from trajplan.video import VideoRecorder


@dataclass
class EvalResult:
    """Episodes and summary of one evaluation (JSON-ready via to_dict)."""

    env: str
    gym_id: str
    episodes: list[EpisodeResult]
    refs: References
    plan: dict[str, Any]
    wall_s: float
    env_steps: int
    episode_steps: int | None = None  # cap given by the user (None: the env's own limit)
    checkpoint: str | None = None
    dataset_id: str | None = None
    interrupted: bool = False  # stopped by Ctrl-C / SIGTERM: episodes are cut short
    weights: str | None = None  # which weights of a TT run: last, best or best-eval

    @property
    def returns(self) -> np.ndarray:
        return np.array([e.ret for e in self.episodes], dtype=np.float64)

    @property
    def ms_per_step(self) -> float:
        return 1000.0 * self.wall_s / max(self.env_steps, 1)

    def summary(self) -> dict[str, Any]:
        rets = self.returns
        scores = [e.score for e in self.episodes]
        out = {
            "episodes": len(rets),
            "return_mean": float(rets.mean()),
            "return_stderr": stderr(rets),
            "score_mean": None,
            "score_stderr": None,
            "length_mean": float(np.mean([e.length for e in self.episodes])),
            "ref_min": self.refs.ref_min,
            "ref_max": self.refs.ref_max,
            "ref_source": self.refs.source,
            "reference": self.refs.describe(),
            "wall_s": round(self.wall_s, 3),
            "ms_per_step": round(self.ms_per_step, 3),
            "comparable": self.episode_steps is None and not self.interrupted,
        }
        if all(s is not None for s in scores):
            arr = np.array(scores, dtype=np.float64)
            out["score_mean"], out["score_stderr"] = float(arr.mean()), stderr(arr)
        if self.plan.get("discount") is not None:
            out["diagnostics"] = plan_diagnostics(self.episodes, float(self.plan["discount"]))
        return out

    def note(self) -> str | None:
        if self.interrupted:
            return "interrupted: partial episodes, not comparable to full-length scores"
        if self.episode_steps is not None:
            return (
                f"episodes capped at {self.episode_steps} steps: not comparable to full-length"
                " scores"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "gym_id": self.gym_id,
            "checkpoint": self.checkpoint,
            "weights": self.weights,
            "dataset_id": self.dataset_id,
            "episode_steps": self.episode_steps,
            "interrupted": self.interrupted,
            "note": self.note(),
            "summary": self.summary(),
            "plan": self.plan,
            "episodes": [asdict(e) for e in self.episodes],
        }


class EvalInterrupted(Stopped):
    """Ctrl-C or SIGTERM during an evaluation; `result` holds the episodes so far."""

    def __init__(self, result: EvalResult, signum: int) -> None:
        super().__init__(signum)
        self.result = result


def check_env_matches(model: TrajectoryGPT, env_name: str, trained_env: str | None) -> None:
    """The env must be the one the model was trained on, with the same dimensions."""
    dims = (model.cfg.obs_dim, model.cfg.act_dim)
    check_fits(env_name, dims, "this model", trained_env)


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
) -> EvalResult:
    """Run a batched policy (a `Planner`, a `policies.BatchedActor`) for n_episodes episodes
    in lockstep and summarize them; `plan` is recorded as the planning config (None: none)."""
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
        with Progress(f"planning {info.name}", n_episodes * limit, enabled=progress) as bar:
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
    checkpoint: Any,
    env: str | None = None,
    *,
    n_episodes: int = 10,
    seed: int = 0,
    plan_cfg: PlanConfig | None = None,
    episode_steps: int | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    on_step: Callable[[StepInfo], None] | None = None,
    recorder: VideoRecorder | None = None,
    seeds: Sequence[int] | None = None,
    action_noise: float = 0.0,
) -> EvalResult:
    """Evaluate a loaded run in its env: a TT checkpoint (trajplan.checkpoint.Checkpoint)
    plans; a BC run (trajplan.bc.BCRun) acts with its policy on the same seeds.

    plan_cfg defaults to the run's own planning config; env defaults to the run's env;
    seeds (optional) replaces seed..seed+n_episodes-1; action_noise (BC runs only): its
    actions plus that much noise (`policies.BatchedActor`), e.g. the noise of a search's
    prior candidates. Everything after env is by keyword.
    """
    from trajplan.bc import BCRun

    env_name = env or checkpoint.env
    if action_noise and not isinstance(checkpoint, BCRun):
        raise TrajplanError(
            "action noise is for BC runs; a TT run's prior candidates take plan.prior_noise"
        )
    if isinstance(checkpoint, BCRun):
        from trajplan.policies import BatchedActor

        actor = checkpoint.actor
        check_fits(env_name, (actor.obs_dim, actor.act_dim), f"BC run {checkpoint.run_dir}")
        refs = references_for(
            env_name, checkpoint.ref_min, checkpoint.ref_max, checkpoint.ref_source or ""
        )
        result = evaluate_policy(
            BatchedActor(checkpoint.actor, action_noise),
            env_name,
            n_episodes=n_episodes,
            seed=seed,
            episode_steps=episode_steps,
            refs=refs,
            progress=progress,
            on_step=on_step,
            recorder=recorder,
            seeds=seeds,
            plan={"policy": "bc", **({"action_noise": action_noise} if action_noise else {})},
        )
        result.checkpoint, result.dataset_id = str(checkpoint.run_dir), checkpoint.dataset_id
        return result
    model = checkpoint.model
    check_env_matches(model, env_name, checkpoint.env)
    cfg = plan_cfg or checkpoint.config.plan
    refs = references_for(
        env_name,
        getattr(checkpoint, "ref_min", None),
        getattr(checkpoint, "ref_max", None),
        getattr(checkpoint, "ref_source", "") or "",
    )
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    try:
        result = evaluate(
            model.to(dev),
            checkpoint.discretizer,
            env_name,
            cfg,
            n_episodes=n_episodes,
            seed=seed,
            episode_steps=episode_steps,
            device=dev,
            refs=refs,
            progress=progress,
            on_step=on_step,
            recorder=recorder,
            seeds=seeds,
        )
    except EvalInterrupted as stop:
        stop.result.checkpoint = str(checkpoint.run_dir)
        stop.result.dataset_id = getattr(checkpoint, "dataset_id", None)
        raise
    result.checkpoint = str(checkpoint.run_dir)
    result.weights = getattr(checkpoint, "which", None)
    result.dataset_id = getattr(checkpoint, "dataset_id", None)
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
    from trajplan.checkpoint import find_latest_run

    return Path(find_latest_run(resolve_env(env).name, runs_root=runs_root))


def with_overrides(cfg: PlanConfig, sets: Sequence[str] = (), **overrides: Any) -> PlanConfig:
    """A copy of cfg with every override that is not None applied, then the
    `plan.KEY=VALUE` strings of `sets` (the CLI's --set), then checked."""
    new = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    for item in sets:
        section, dot, rest = item.strip().partition(".")
        if section != "plan" or not dot or "=" not in rest:
            raise TrajplanError(
                f"--set {item!r}: plan and eval take plan.KEY=VALUE, e.g. plan.logp_weight=0.1"
            )
        apply_overrides(new, [rest])
    check_plan_config(new)
    if new.prior and new.prior != cfg.prior:  # a prior named now: absolute, and it must load
        from trajplan.planner.prior import load_prior

        new.prior = str(Path(new.prior).expanduser().resolve())
        load_prior(new.prior)
    return new
