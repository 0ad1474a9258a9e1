"""What an evaluation leaves behind: its folder name, eval.json, eval.png, and which eval.json
speaks for a run (the hub's model card and `trajplan plot` read that one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trajplan.config import PlanConfig
from trajplan.runtime import atomic_write, write_json
from trajplan.scores import realized_returns

if TYPE_CHECKING:
    from trajplan.evaluate import EvalResult


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
        except (OSError, json.JSONDecodeError, AttributeError):
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
