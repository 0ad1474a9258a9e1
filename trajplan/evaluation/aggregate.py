"""Aggregate evaluations over seeds: per-run scores, mean, stderr, IQM and bootstrap CIs.

One run (one training seed) counts once, with one eval of several episodes: which one, and
which evals are left out as not comparable, is `trajplan.evaluation.selection.select_evals`'s
rule. Runs are grouped (by label `LABEL=PATH`, else by policy and dataset: the seeds of one
config) and each group gets, from the normalized scores of its episodes:

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
from trajplan.evaluation.plot import run_labels
from trajplan.evaluation.scores import stderr as mean_stderr
from trajplan.evaluation.selection import Selection, select_evals


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
    episode_steps: int | None = None  # the cap of its episodes (None: full-length)
    n_episodes: int = field(init=False)

    def __post_init__(self) -> None:
        self.n_episodes = sum(len(r.scores) for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["runs"] = [{**asdict(r), "mean": r.mean, "stderr": r.stderr} for r in self.runs]
        out["n_runs"] = len(self.runs)
        out["comparable"] = self.episode_steps is None  # full-length scores
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


def aggregate_evals(
    paths: Sequence[str | Path], reps: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[list[GroupStats], Selection]:
    """Aggregate eval files (`PATH` or `LABEL=PATH`; eval.json files, eval folders, run
    directories) group by group, one eval per run by `selection.select_evals`'s rule; groups
    keep the order in which they first appear. Also returns the selection (what was left
    out, and why)."""
    selection = select_evals(paths)
    out = []
    for label, members in selection.groups.items():
        refs = {str(e.doc["summary"].get("reference")) for e in members}
        if len(refs) > 1:  # the rule keeps one reference per group; a safeguard
            raise TrajplanError(
                f"group {label!r} mixes reference scores ({'; '.join(sorted(refs))}): "
                "its scores are not on one scale"
            )
        names = run_labels([e.run for e in members])
        runs = []
        for name, e in zip(names, members, strict=True):
            scores = [ep.get("score") for ep in e.doc.get("episodes", [])]
            if not scores or any(s is None for s in scores):
                raise TrajplanError(
                    f"{e.path} has no normalized scores (no reference scores for "
                    f"{e.doc.get('env')}): nothing to aggregate"
                )
            runs.append(RunScores(name, str(e.path), [float(s) for s in scores]))
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
                episode_steps=members[0].doc.get("episode_steps"),
            )
        )
    return out, selection


def aggregate(
    paths: Sequence[str | Path], reps: int = 2000, seed: int = 0, confidence: float = 0.95
) -> list[GroupStats]:
    """The groups of `aggregate_evals` (without the selection)."""
    return aggregate_evals(paths, reps, seed, confidence)[0]


def to_json(
    groups: Sequence[GroupStats],
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    selection: Selection | None = None,
) -> dict[str, Any]:
    """The JSON document `trajplan aggregate --json` writes (with the selection's rule and
    what it left out, when given)."""
    return {
        "format": "trajplan-aggregate/1",
        **({"selection": selection.to_dict()} if selection is not None else {}),
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
        capped = f" (capped at {g.episode_steps} steps)" if g.episode_steps is not None else ""
        name = g.label + capped
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
