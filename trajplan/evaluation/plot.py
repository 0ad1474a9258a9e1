"""Figures of runs: learning curves from metrics.jsonl, score comparisons from eval.json.

`read_series` is the one reader of a run's metrics.jsonl: every numeric field of every line,
one series per (line kind, field), against the optimizer step or the tokens seen. The
lines it knows how to draw:

    {"kind": "train", "step", "tokens", "loss", "loss_obs", "loss_act", ...}   TT training
    {"kind": "val", "step", "val_loss", "val_obs", "val_act", ...}             TT validation
    {"kind": "bc", "step", "loss", "val_loss"}                                 BC baseline
    {"kind": "eval", "step", "score_mean"}                                     eval in training

`plot_curves` draws one panel per quantity (TT loss, loss by token kind, BC loss, eval
score) with one colour per run; `plot_scores` draws the normalized score of eval.json files
as bars with mean +- stderr error bars and names the reference scores used. PNG or SVG by
the file's suffix; matplotlib runs headless (Agg).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trajplan.errors import TrajplanError
from trajplan.evaluation.scores import realized_returns
from trajplan.runtime import atomic_write, check_out_file

X_AXES = ("step", "tokens")
FORMATS = {".png": "png", ".svg": "svg"}
Series = dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]  # (kind, field) -> (x, y)


@dataclass(frozen=True)
class Panel:
    """One subplot: the (kind, field) series it draws, as (kind, field, legend, line style)."""

    title: str
    ylabel: str
    lines: tuple[tuple[str, str, str, str], ...]


TOKEN_KINDS = (("obs", "observation"), ("act", "action"), ("rew", "reward"), ("val", "value"))
PANELS = (
    Panel("TT loss", "cross-entropy", (("train", "loss", "train", "-"),
                                       ("val", "val_loss", "validation", "--"))),
    *(
        Panel(f"{name} tokens", "cross-entropy", (("train", f"loss_{k}", "train", "-"),
                                                  ("val", f"val_{k}", "validation", "--")))
        for k, name in TOKEN_KINDS
    ),
    Panel("BC loss", "action MSE", (("bc", "loss", "train", "-"),
                                    ("bc", "val_loss", "validation", "--"))),
    Panel("IQL losses", "loss", (("iql", "q_loss", "Q", "-"), ("iql", "v_loss", "V", "--"),
                                 ("iql", "actor_loss", "actor", ":"))),
    Panel("evaluation during training", "normalized score",
          (("eval", "score_mean", "eval", "-o"),)),
)  # fmt: skip


# -- reading -------------------------------------------------------------------------------


def metrics_path(run: str | Path) -> Path:
    """RUN/metrics.jsonl (or the file itself when given one)."""
    path = Path(run)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise TrajplanError(f"no metrics file {path}: is {run} a trajplan run directory?")
    return path


def read_rows(metrics: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a metrics.jsonl; lines that are not JSON objects (a line cut
    short by a kill, a damaged byte) are skipped, with one warning for those not UTF-8."""
    rows = []
    bad = 0
    for raw in Path(metrics).read_bytes().splitlines():
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad += 1
            continue
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    if bad:
        print(f"warning: {metrics}: skipped {bad} line(s) that are not UTF-8", file=sys.stderr)
    return rows


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_series(metrics: str | Path, x: str = "step") -> Series:
    """Every finite numeric field of every line kind, against `x` ("step" or "tokens").

    Lines without a step use their line number. Lines without a token count (validation,
    epoch, eval lines) get one interpolated from the training lines' steps; a file with no
    token counts at all (a BC run) cannot be read against tokens.
    """
    if x not in X_AXES:
        raise TrajplanError(f"x axis must be one of {', '.join(X_AXES)}, got {x!r}")
    rows = read_rows(metrics)
    steps = [float(r["step"]) if _number(r.get("step")) else float(n) for n, r in enumerate(rows)]
    xs = steps
    if x == "tokens":
        known = sorted(
            (s, float(r["tokens"]))
            for s, r in zip(steps, rows, strict=True)
            if _number(r.get("tokens"))
        )
        if not known:
            raise TrajplanError(f"{metrics} has no token counts (a BC run?): use --x step")
        k_steps, k_tokens = np.array(known).T
        xs = [
            float(r["tokens"])
            if _number(r.get("tokens"))
            else float(np.interp(s, k_steps, k_tokens))
            for s, r in zip(steps, rows, strict=True)
        ]
    out: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for xv, row in zip(xs, rows, strict=True):
        kind = row.get("kind") if isinstance(row.get("kind"), str) else ""
        for key, val in row.items():
            if key not in ("step", "tokens", "epoch") and _number(val):
                sx, sy = out.setdefault((kind, key), ([], []))
                sx.append(xv)
                sy.append(float(val))
    return {k: (np.array(a), np.array(b)) for k, (a, b) in out.items()}


def loss_curves(metrics: str | Path) -> dict[str, tuple[list[float], list[float]]]:
    """The '*loss*' series of a metrics.jsonl against the step, named 'KIND FIELD'."""
    return {
        f"{kind} {key}".strip(): (list(xs), list(ys))
        for (kind, key), (xs, ys) in read_series(metrics).items()
        if "loss" in key
    }


def run_labels(paths: Sequence[str | Path]) -> list[str]:
    """Short distinct names: the last path component, more of the path where two collide."""
    parts = [Path(p).resolve().parts for p in paths]
    depth = [1] * len(parts)
    while True:
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        clash = [
            i for i, lb in enumerate(labels) if labels.count(lb) > 1 and depth[i] < len(parts[i])
        ]
        if not clash:
            return labels
        for i in clash:
            depth[i] += 1


# -- drawing -------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_figure_path(path: str | Path) -> Path:
    """A figure's file: .png or .svg, not a folder, in a writable folder (checked first)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise TrajplanError(f"{path}: the figure's file name must end in .png or .svg")
    return check_out_file(path, "figure")


def _save(fig: Any, path: str | Path) -> Path:
    path = check_figure_path(path)
    fmt = FORMATS[path.suffix.lower()]
    atomic_write(path, lambda p: fig.savefig(p, format=fmt, dpi=120, bbox_inches="tight"))
    return path


def plot_curves(runs: Sequence[str | Path], out: str | Path, x: str = "step") -> Path:
    """Learning curves of one or more runs (TT or BC) as a PNG or SVG; returns its path."""
    other = [r for r in runs if Path(r).is_file() and Path(r).suffix != ".jsonl"]
    if other:  # OUT/seed* also matches a --seeds folder's seed0.log and seeds-config.yaml
        names = ", ".join(str(r) for r in other)
        print(f"skipped (not run directories): {names}", file=sys.stderr)
        runs = [r for r in runs if r not in other]
    if not runs:
        raise TrajplanError("give at least one run directory to plot")
    check_figure_path(out)
    series = [read_series(metrics_path(r), x) for r in runs]
    drawable = {(kind, field) for p in PANELS for kind, field, _, _ in p.lines}
    for run, s in zip(runs, series, strict=True):
        if not drawable & s.keys():
            raise TrajplanError(f"{run}: its metrics.jsonl has no loss or score lines yet")
    panels = [p for p in PANELS if any((k, f) in s for s in series for k, f, _, _ in p.lines)]
    plt = _pyplot()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = run_labels(runs)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for i, (label, s) in enumerate(zip(labels, series, strict=True)):
            for kind, field, legend, style in panel.lines:
                if (kind, field) in s:
                    xs, ys = s[(kind, field)]
                    name = label if len(panel.lines) == 1 else f"{label} ({legend})"
                    # a lone point (one validation so far) draws no line: mark it
                    mark = {"marker": "o", "ms": 4} if len(xs) == 1 else {}
                    ax.plot(xs, ys, style, color=colors[i % len(colors)], label=name, lw=1.4,
                            **mark)  # fmt: skip
        ax.set_title(panel.title)
        ax.set_xlabel("optimizer step" if x == "step" else "tokens seen")
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    try:
        return _save(fig, out)
    finally:
        plt.close(fig)


def plot_scores(docs: Sequence[dict[str, Any]], labels: Sequence[str], out: str | Path) -> Path:
    """Normalized score of each evaluation (eval.json documents, `trajplan.evaluation.evalfiles`;
    mean +- stderr over its episodes) as bars, one per label."""
    check_figure_path(out)
    labels = list(labels)
    for i, d in enumerate(docs):
        if not d["summary"].get("comparable", True):
            labels[i] += f" (capped at {d.get('episode_steps')} steps)"
    means = [d["summary"]["score_mean"] for d in docs]
    errs = [d["summary"].get("score_stderr") or 0.0 for d in docs]
    refs = sorted({str(d["summary"].get("reference") or d["summary"].get("ref_source"))
                   for d in docs})  # fmt: skip
    envs = sorted({str(d.get("gym_id") or d.get("env")) for d in docs})
    plt = _pyplot()
    width = 8 + 0.07 * max(0, max(len(lb) for lb in labels) - 30)  # room for long labels
    fig, ax = plt.subplots(figsize=(width, 1.2 + 0.5 * len(docs)))
    ys = np.arange(len(docs))[::-1]
    ax.barh(ys, means, xerr=errs, color="tab:blue", alpha=0.8, capsize=4)
    ax.set_yticks(ys, labels)
    for y, m, e in zip(ys, means, errs, strict=True):
        ax.text(m + e, y, f"  {m:.1f} ± {e:.1f}", va="center", fontsize="small")
    ax.set_xlabel("normalized score (0 = random, 100 = expert), mean ± stderr over episodes")
    ax.set_title(f"{', '.join(envs)}: {sum(d['summary']['episodes'] for d in docs)} episodes")
    ax.axvline(0, color="k", lw=0.8)
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.15)
    fig.text(0.01, -0.02, "reference scores: " + "; ".join(refs), fontsize="small", va="top")
    fig.tight_layout()
    try:
        return _save(fig, out)
    finally:
        plt.close(fig)


def plot_eval(result: Any, path: str | Path, metrics: str | Path | None = None) -> Path:
    """PNG of an `EvalResult`: return of every episode (and mean); the training loss
    curves if present; for a
    planner, its predictions next to what the env returned in the first episode."""
    plt = _pyplot()
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
