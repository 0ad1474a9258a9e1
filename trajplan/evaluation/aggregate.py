"""Aggregate evaluations over seeds: per-run scores, mean, stderr, IQM and bootstrap CIs.

One eval.json is one run (one training seed) evaluated on several episodes. Runs are
grouped (by label `LABEL=PATH`, else by policy and dataset: the seeds of one config) and
each group gets, from the normalized scores of its episodes:

- per run: mean score over its episodes and its stderr;
- mean: the mean of the per-run means (every seed counts the same), and its stderr over runs;
- IQM: the interquartile mean of all episode scores pooled (the middle 50%, rliable's
  recommended point estimate: robust to outlier runs, less noisy than the median);
- 95% confidence intervals of both from a two-level stratified bootstrap: every sample
  draws the group's runs with replacement, then within each drawn run its own episodes with
  replacement (each run keeps its episode count). Percentile intervals, seeded.

Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice" (rliable) for the
practice; written with numpy here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trajplan.errors import TrajplanError
from trajplan.evaluation.evalfiles import eval_label, eval_path, read_eval
from trajplan.evaluation.plot import run_labels
from trajplan.evaluation.scores import stderr as mean_stderr


@dataclass
class RunScores:
    """One eval.json: the normalized score of each of its episodes."""

    label: str
    path: str
    scores: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def stderr(self) -> float | None:
        return mean_stderr(np.asarray(self.scores))


@dataclass
class GroupStats:
    """The aggregate of one group of runs (e.g. the seeds of one config)."""

    label: str
    reference: str
    runs: list[RunScores]
    mean: float
    stderr: float | None  # over runs (None for one run)
    mean_ci: tuple[float, float]
    iqm: float
    iqm_ci: tuple[float, float]
    comparable: bool = True  # False when episodes were capped (not full-length scores)
    n_episodes: int = field(init=False)

    def __post_init__(self) -> None:
        self.n_episodes = sum(len(r.scores) for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["runs"] = [{**asdict(r), "mean": r.mean, "stderr": r.stderr} for r in self.runs]
        out["n_runs"] = len(self.runs)
        return out


def iqm(x: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (floor(n/4) cut from each end)."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    cut = len(x) // 4
    return float(x[cut : len(x) - cut].mean())


def bootstrap_ci(
    runs: Sequence[np.ndarray],
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile CIs of the IQM and of the mean of run means, from a two-level bootstrap
    (runs with replacement, then episodes within each drawn run with replacement)."""
    if reps < 1:
        raise TrajplanError(f"bootstrap reps must be at least 1, got {reps}")
    rng = np.random.default_rng(seed)
    iqms, means = np.empty(reps), np.empty(reps)
    for b in range(reps):
        drawn = [runs[i] for i in rng.integers(0, len(runs), len(runs))]
        resampled = [r[rng.integers(0, len(r), len(r))] for r in drawn]
        iqms[b] = iqm(np.concatenate(resampled))
        means[b] = np.mean([r.mean() for r in resampled])
    tail = 100 * (1 - confidence) / 2
    ci = lambda v: tuple(float(q) for q in np.percentile(v, [tail, 100 - tail]))  # noqa: E731
    return {"iqm": ci(iqms), "mean": ci(means)}


def group_key(doc: dict[str, Any]) -> str:
    """Default group of an eval.json: its policy (TT or BC) and dataset."""
    policy = "BC" if doc.get("plan", {}).get("policy") == "bc" else "TT"
    return f"{policy} {doc.get('dataset_id') or doc.get('env') or '?'}"


def aggregate(
    paths: Sequence[str], reps: int = 2000, seed: int = 0, confidence: float = 0.95
) -> list[GroupStats]:
    """Group eval.json files (`PATH` or `LABEL=PATH`; run directories work too) and
    aggregate each group; groups keep the order in which they first appear."""
    if not paths:
        raise TrajplanError("give at least one eval.json (or run directory) to aggregate")
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for item in paths:
        label, _, path = ("", "", item) if Path(item).exists() else item.partition("=")
        label, path = (label, path) if path else ("", item)
        doc = read_eval(path)
        groups.setdefault(label or group_key(doc), []).append((path, doc))
    out = []
    for label, members in groups.items():
        refs = {str(d["summary"].get("reference")) for _, d in members}
        if len(refs) > 1:
            raise TrajplanError(
                f"group {label!r} mixes reference scores ({'; '.join(sorted(refs))}): "
                "its scores are not on one scale"
            )
        names = run_labels([eval_label(d, p) for p, d in members])
        runs = []
        for name, (path, doc) in zip(names, members, strict=True):
            scores = [e.get("score") for e in doc.get("episodes", [])]
            if not scores or any(s is None for s in scores):
                raise TrajplanError(
                    f"{eval_path(path)} has no normalized scores (no reference scores for "
                    f"{doc.get('env')}): nothing to aggregate"
                )
            runs.append(RunScores(name, str(eval_path(path)), [float(s) for s in scores]))
        arrays = [np.asarray(r.scores) for r in runs]
        ci = bootstrap_ci(arrays, reps, seed, confidence)
        run_means = np.array([r.mean for r in runs])
        out.append(
            GroupStats(
                label=label,
                reference=refs.pop(),
                runs=runs,
                mean=float(run_means.mean()),
                stderr=mean_stderr(run_means),
                mean_ci=ci["mean"],
                iqm=iqm(np.concatenate(arrays)),
                iqm_ci=ci["iqm"],
                comparable=all(d["summary"].get("comparable", True) for _, d in members),
            )
        )
    return out


def to_json(
    groups: Sequence[GroupStats], reps: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """The JSON document `trajplan aggregate --json` writes."""
    return {
        "format": "trajplan-aggregate/1",
        "bootstrap": {
            "reps": reps,
            "seed": seed,
            "confidence": confidence,
            "method": "two-level stratified bootstrap: runs with replacement, then the "
            "episodes of each drawn run with replacement; percentile intervals",
        },
        "groups": [g.to_dict() for g in groups],
    }


def tables(groups: Sequence[GroupStats], confidence: float = 0.95) -> list[Any]:
    """Rich tables (summary, then every run), readable at 80 columns."""
    from rich.table import Table

    pct = f"{100 * confidence:g}%"
    summary = Table(title="normalized score over seeds", title_justify="left")
    for col, justify in (("group", "left"), ("runs", "right"), ("episodes", "right"),
                         ("mean ± se", "right"), (f"IQM [{pct} CI]", "right")):  # fmt: skip
        summary.add_column(col, justify=justify, overflow="fold")
    per_run = Table(title="per run (mean ± stderr over its episodes)", title_justify="left")
    for col, justify in (("group", "left"), ("run", "left"), ("episodes", "right"),
                         ("score", "right")):  # fmt: skip
        per_run.add_column(col, justify=justify, overflow="fold")
    for g in groups:
        se = "" if g.stderr is None else f" ± {g.stderr:.1f}"
        name = g.label if g.comparable else f"{g.label} (capped episodes)"
        summary.add_row(
            name,
            str(len(g.runs)),
            str(g.n_episodes),
            f"{g.mean:.1f}{se}",
            f"{g.iqm:.1f} [{g.iqm_ci[0]:.1f}, {g.iqm_ci[1]:.1f}]",
        )
        for r in g.runs:
            rse = "" if r.stderr is None else f" ± {r.stderr:.1f}"
            per_run.add_row(g.label, r.label, str(len(r.scores)), f"{r.mean:.1f}{rse}")
    refs = sorted({g.reference for g in groups})
    summary.caption = f"reference scores: {'; '.join(refs)}. CIs: bootstrap over runs and episodes"
    summary.caption_justify = "left"
    return [summary, per_run]
