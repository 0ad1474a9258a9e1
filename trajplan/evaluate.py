"""Evaluate a trained model by planning in its environment (docs/method.md, Scores).

`run_episodes` plays N episodes (seeds seed, seed+1, ...) in lockstep through one batched
`Planner`: all beams of all episodes share every model call, and a finished episode leaves
the batch. Episode e is reset with seeds[e] and samples from a generator seeded with
seeds[e], so its actions are the same whether it runs alone or with others.

Scores are D4RL-normalized, `100 * (return - ref_min) / (ref_max - ref_min)`, with the
dataset's own reference scores when the checkpoint has them and the D4RL constants
otherwise; the result always names which one. `episode_steps` caps episodes for quick looks:
such scores are marked as not comparable to full-length (1000-step) ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajplan.config import PlanConfig, apply_overrides, to_dict
from trajplan.envs import make_env, normalized_score, obs_view, resolve_env
from trajplan.errors import TrajplanError
from trajplan.model import TrajectoryGPT
from trajplan.plan import Planner, check_plan_config
from trajplan.progress import Progress
from trajplan.runtime import Stopped, atomic_write, resolve_device, write_json
from trajplan.tokens import Discretizer
from trajplan.video import VideoRecorder, release


@dataclass
class References:
    """Reference returns for normalized scores, and where they come from."""

    ref_min: float | None
    ref_max: float | None
    source: str  # "dataset metadata", "D4RL constants" or "none"

    def describe(self) -> str:
        """e.g. 'D4RL constants (-280.18 .. 12135.00)' or 'none'."""
        if self.ref_min is None or self.ref_max is None:
            return self.source
        return f"{self.source} ({self.ref_min:.2f} .. {self.ref_max:.2f})"

    def score(self, ret: float) -> float | None:
        if self.ref_min is None or self.ref_max is None:
            return None
        return normalized_score(ret, self.ref_min, self.ref_max)


def references_for(
    env: str, ref_min: float | None = None, ref_max: float | None = None, source: str = ""
) -> References:
    """The given references (e.g. from dataset metadata), else the env's D4RL constants."""
    if ref_min is not None and ref_max is not None:
        return References(float(ref_min), float(ref_max), source or "dataset metadata")
    info = resolve_env(env)
    if info.ref_min is not None and info.ref_max is not None:
        return References(info.ref_min, info.ref_max, "D4RL constants")
    return References(None, None, "none")


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


def realized_returns(rewards: Sequence[float], discount: float) -> np.ndarray:
    """[T] discounted return actually collected from every step: sum_k gamma^k r_{t+k}."""
    out = np.zeros(len(rewards))
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):  # one pass per episode, not per token
        acc = rewards[t] + discount * acc
        out[t] = acc
    return out


def plan_diagnostics(episodes: Sequence[EpisodeResult], discount: float) -> dict[str, Any]:
    """How well the planner's predictions matched what the env returned, over all steps.

    reward: the expected reward of each executed step vs the env's reward. return: the score
    of the plan each action came from vs the discounted return actually collected from that
    step (sum_k gamma^k r_{t+k}); the last 1/(1-gamma) steps of an episode cut by its time
    limit are left out (their realized return is cut short, the model cannot see the clock).
    A good reward fit with a large return bias says the value head is wrong; good fits with a
    poor score say the search, not the model, is at fault.
    """
    pr, r, pv, g = [], [], [], []
    tail = int(round(1.0 / (1.0 - discount))) if discount < 1 else 0
    for e in episodes:
        if not e.pred_rewards:
            continue
        pr += e.pred_rewards
        r += e.rewards[: len(e.pred_rewards)]
        keep = len(e.rewards) if e.terminated else max(len(e.rewards) - tail, 0)
        pv += e.pred_returns[:keep]
        g += list(realized_returns(e.rewards, discount)[:keep])
    if not pr:
        return {}

    def corr(a: np.ndarray, b: np.ndarray) -> float | None:
        if len(a) < 2 or a.std() == 0 or b.std() == 0:
            return None
        return float(np.corrcoef(a, b)[0, 1])

    pr_, r_, pv_, g_ = (np.asarray(x, dtype=np.float64) for x in (pr, r, pv, g))
    out: dict[str, Any] = {
        "steps": len(pr_),
        "reward_pred_mean": float(pr_.mean()),
        "reward_env_mean": float(r_.mean()),
        "reward_mae": float(np.abs(pr_ - r_).mean()),
        "reward_corr": corr(pr_, r_),
    }
    if len(pv_):
        out.update(
            return_steps=len(pv_),
            return_pred_mean=float(pv_.mean()),
            return_realized_mean=float(g_.mean()),
            return_bias=float((pv_ - g_).mean()),
            return_corr=corr(pv_, g_),
        )
    return out


def stderr(x: np.ndarray) -> float | None:
    """Standard error of the mean (None for fewer than two values)."""
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else None


def check_env_matches(model: TrajectoryGPT, env_name: str, trained_env: str | None) -> None:
    """The env must be the one the model was trained on, with the same dimensions."""
    info = resolve_env(env_name)
    if trained_env is not None and resolve_env(trained_env).name != info.name:
        raise TrajplanError(
            f"this model was trained on {trained_env}, not {env_name}: pick a checkpoint "
            f"trained on {info.name} (or leave --env out)"
        )
    env = make_env(env_name)
    try:
        obs_dim = obs_view(info, np.zeros(env.observation_space.shape)).shape[-1]
        act_dim = env.action_space.shape[0]
    finally:
        env.close()
    if (obs_dim, act_dim) != (model.cfg.obs_dim, model.cfg.act_dim):
        raise TrajplanError(
            f"{info.gym_id} has {obs_dim} observation / {act_dim} action dims but the model "
            f"expects {model.cfg.obs_dim} / {model.cfg.act_dim}: wrong checkpoint for this env"
        )


def rollout(
    planner: Planner,
    env_name: str,
    seeds: Sequence[int],
    refs: References,
    episode_steps: int | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    recorder: VideoRecorder | None = None,
    sink: list[EpisodeResult] | None = None,
) -> list[EpisodeResult]:
    """Play len(seeds) episodes in lockstep with one planner; returns them in seed order.

    With a `recorder`, the episodes it names (indices into seeds) are rendered into videos.
    `sink` receives the episodes as they start (and grow): what is left if it is stopped.
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
            seen = obs_view(info, obs)  # [E, o]
            actions = planner.act(seen)  # [E, a]
            pred = planner.predictions() if hasattr(planner, "predictions") else None
            next_obs, rewards, done = [], np.zeros(len(alive)), np.zeros(len(alive), bool)
            for j, i in enumerate(alive):
                o2, r, term, trunc, _ = envs[i].step(actions[j])
                res = results[i]
                if pred is not None:
                    res.pred_rewards.append(float(pred[0][j]))
                    res.pred_returns.append(float(pred[1][j]))
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
    n_episodes: int = 10,
    seed: int = 0,
    plan_cfg: PlanConfig | None = None,
    episode_steps: int | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    on_step: Callable[[StepInfo], None] | None = None,
    recorder: VideoRecorder | None = None,
    seeds: Sequence[int] | None = None,
) -> EvalResult:
    """Evaluate a loaded run in its env: a TT checkpoint (trajplan.checkpoint.Checkpoint)
    plans; a BC run (trajplan.bc.BCRun) acts with its policy on the same seeds.

    plan_cfg defaults to the run's own planning config; env defaults to the run's env;
    seeds (optional) replaces seed..seed+n_episodes-1.
    """
    from trajplan.bc import BCRun

    env_name = env or checkpoint.env
    if isinstance(checkpoint, BCRun):
        from trajplan.policies import BatchedActor, check_policy_fits

        probe = make_env(env_name)
        try:
            view = obs_view(resolve_env(env_name), np.zeros(probe.observation_space.shape))
            if (checkpoint.actor.obs_dim, checkpoint.actor.act_dim) != (
                view.shape[-1],
                probe.action_space.shape[0],
            ):
                check_policy_fits(checkpoint.actor, probe, str(checkpoint.run_dir))
        finally:
            probe.close()
        refs = references_for(
            env_name, checkpoint.ref_min, checkpoint.ref_max, checkpoint.ref_source or ""
        )
        result = evaluate_policy(
            BatchedActor(checkpoint.actor),
            env_name,
            n_episodes=n_episodes,
            seed=seed,
            episode_steps=episode_steps,
            refs=refs,
            progress=progress,
            on_step=on_step,
            recorder=recorder,
            seeds=seeds,
            plan={"policy": "bc"},
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
            n_episodes,
            seed,
            episode_steps,
            dev,
            refs,
            progress,
            on_step,
            recorder,
            seeds,
        )
    except EvalInterrupted as stop:
        stop.result.checkpoint = str(checkpoint.run_dir)
        stop.result.dataset_id = getattr(checkpoint, "dataset_id", None)
        raise
    result.checkpoint = str(checkpoint.run_dir)
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
    return new


# -- files ---------------------------------------------------------------------------------


def eval_name(
    n_episodes: int, seed: int, plan: PlanConfig | None, episode_steps: int | None
) -> str:
    """A folder name that says what an evaluation was, e.g. 10ep-seed0-h15-b128-20250101-
    120000 (plus -capped200 for capped episodes): a quick look never replaces a full one."""
    import datetime as _dt

    name = f"{n_episodes}ep-seed{seed}"
    if plan is not None:
        name += f"-h{plan.horizon}-b{plan.beam_width}"
    if episode_steps is not None:
        name += f"-capped{episode_steps}"
    return f"{name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def latest_eval(run_dir: str | Path) -> Path | None:
    """The eval.json that speaks for a run: among RUN/eval/*/eval.json (and RUN/eval/eval.json),
    full-length and complete ones first, then the most episodes, then the newest."""

    def rank(path: Path) -> tuple:
        try:
            s = json.loads(path.read_text()).get("summary", {})
        except (OSError, json.JSONDecodeError, AttributeError):
            return (False, False, 0, 0.0)
        return (
            bool(s.get("comparable")),
            not s.get("interrupted", False),
            int(s.get("episodes", 0)),
            path.stat().st_mtime,
        )

    root = Path(run_dir) / "eval"
    found = [*root.glob("eval.json"), *root.glob("*/eval.json")] if root.is_dir() else []
    return max(found, key=rank) if found else None


def save_eval(result: EvalResult, out_dir: str | Path, metrics: str | Path | None = None) -> Path:
    """Write eval.json and eval.png (returns per episode; training loss when metrics exist)."""
    out = Path(out_dir)
    write_json(out / "eval.json", result.to_dict())
    plot_eval(result, out / "eval.png", metrics)
    return out / "eval.json"


def plot_eval(result: EvalResult, path: str | Path, metrics: str | Path | None = None) -> Path:
    """PNG: return of every episode (and mean); the training loss curves if present; for a
    planner, its predictions next to what the env returned in the first episode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trajplan.plot import loss_curves

    curves = loss_curves(metrics) if metrics and Path(metrics).is_file() else {}
    first = result.episodes[0]
    n_panels = 1 + bool(curves) + 2 * bool(first.pred_rewards)
    fig, axes = plt.subplots(1, n_panels, figsize=(5.5 * n_panels, 4), squeeze=False)
    panels = iter(axes[0])
    ax = next(panels)
    rets = result.returns
    ax.bar([str(e.seed) for e in result.episodes], rets, color="tab:blue")
    ax.axhline(rets.mean(), color="k", ls="--", label=f"mean {rets.mean():.1f}")
    ax.set_xlabel("episode seed")
    ax.set_ylabel("return")
    title = f"{result.gym_id}: {len(rets)} episodes"
    if result.episode_steps is not None:
        title += f" (capped at {result.episode_steps} steps)"
    ax.set_title(title)
    ax.legend()
    if curves:
        ax = next(panels)
        for key, (xs, ys) in curves.items():
            ax.plot(xs, ys, label=key)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("training")
        ax.legend(fontsize="small")
    if first.pred_rewards:
        t = np.arange(len(first.pred_rewards))
        ax = next(panels)
        ax.plot(t, first.rewards[: len(t)], lw=0.8, label="env reward")
        ax.plot(t, first.pred_rewards, lw=0.8, label="predicted (expected) reward")
        ax.set_xlabel("env step")
        ax.set_ylabel("reward")
        ax.set_title(f"episode seed {first.seed}: reward")
        ax.legend(fontsize="small")
        ax = next(panels)
        gamma = float(result.plan.get("discount", 0.99))
        ax.plot(t, realized_returns(first.rewards, gamma)[: len(t)], lw=0.8,
                label="realized discounted return")  # fmt: skip
        ax.plot(t, first.pred_returns, lw=0.8, label="score of the plan acted on")
        ax.set_xlabel("env step")
        ax.set_ylabel(f"discounted return (gamma {gamma:g})")
        ax.set_title("predicted vs realized return")
        ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return Path(path)
