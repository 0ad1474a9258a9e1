"""Eval files, the one reader and writer: what an evaluation leaves behind (its folder name,
eval.json, eval.png), reading them back, and which eval.json speaks for a run (the hub's
model card reads that one). Which evals count when many runs are compared:
`trajplan.evaluation.selection`. Figures are drawn by `trajplan.evaluation.plot`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trajplan.config import PlanConfig
from trajplan.envs.references import References
from trajplan.envs.rollout import EpisodeResult
from trajplan.errors import TrajplanError
from trajplan.evaluation.plot import plot_eval
from trajplan.evaluation.scores import plan_diagnostics, stderr
from trajplan.runs.checkpoint import now_iso
from trajplan.runtime import write_json


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
    weights_file: str | None = None  # the file those weights were read from
    step: int | None = None  # the optimizer step of those weights (None: not a TT run)
    created: str = field(default_factory=now_iso)  # when the evaluation ended

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
        out["success_rate"] = success_rate(self.episodes)
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
            "weights_file": self.weights_file,
            "step": self.step,
            "created": self.created,
            "dataset_id": self.dataset_id,
            "episode_steps": self.episode_steps,
            "interrupted": self.interrupted,
            "note": self.note(),
            "summary": self.summary(),
            "plan": self.plan,
            "episodes": [asdict(e) for e in self.episodes],
        }


def success_rate(episodes: Sequence[EpisodeResult]) -> float | None:
    """Share of episodes that reached their goal, over those whose env reports success
    (goal envs: mazes); None when no episode reports it."""
    known = [e.success for e in episodes if e.success is not None]
    return float(np.mean(known)) if known else None


def eval_name(
    n_episodes: int,
    seed: int,
    plan: PlanConfig | None,
    episode_steps: int | None,
    action_noise: float = 0.0,
) -> str:
    """A folder name that says what an evaluation was, e.g. 10ep-seed0-h15-b128-20250101-
    120000 (plus -capped200 for capped episodes, -noise0.1 for a BC run's noisy actions):
    a quick look never replaces a full one."""
    import datetime as _dt

    name = f"{n_episodes}ep-seed{seed}"
    if plan is not None:
        name += f"-h{plan.horizon}-b{plan.beam_width}"
        name += "-prior" if plan.prior else ""
        name += "-criticq" if plan.critic else ""
        name += "-likelihood" if plan.objective == "likelihood" else ""
    if action_noise:
        name += f"-noise{action_noise:g}"
    if episode_steps is not None:
        name += f"-capped{episode_steps}"
    return f"{name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def latest_eval(run_dir: str | Path) -> Path | None:
    """The eval.json that speaks for a run: among RUN/eval/*/eval.json (and RUN/eval/eval.json),
    full-length and complete ones first, then the most episodes, then the newest; a BC run's
    evaluations with added action noise (a diagnostic) only when there is no other."""

    def rank(path: Path) -> tuple:
        try:
            doc = json.loads(path.read_text())
            s, plan = doc.get("summary", {}), doc.get("plan") or {}
        except (OSError, ValueError, AttributeError):  # JSON or UTF-8 errors too
            return (False, False, False, 0, 0.0)
        return (
            not plan.get("action_noise"),
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


def eval_path(path: str | Path) -> Path:
    """An eval.json: the file itself, or DIR/eval.json, or RUN/eval/eval.json."""
    p = Path(path)
    for candidate in (p, p / "eval.json", p / "eval" / "eval.json"):
        if candidate.is_file():
            return candidate
    raise TrajplanError(f"no eval.json at {p}: run `trajplan eval` first")


def read_eval(path: str | Path) -> dict[str, Any]:
    """Parse an eval.json written by `trajplan eval` (`EvalResult.to_dict`)."""
    p = eval_path(path)
    try:
        doc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TrajplanError(f"{p}: not a JSON file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("summary"), dict):
        raise TrajplanError(f"{p}: not an eval.json written by trajplan eval (no summary)")
    return doc
