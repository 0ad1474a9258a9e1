"""Eval files, the one reader and writer: what an evaluation leaves behind (its folder name,
eval.json, eval.png), reading them back, which eval.json speaks for a run (the hub's model
card reads that one), and which evals count when many runs are compared (`select_evals`,
the one rule `trajplan aggregate` and `trajplan plot --scores` follow: one run counts once,
and evals that are not comparable never pool). Figures are drawn by `trajplan.evaluation.plot`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trajplan.checkpoint import now_iso
from trajplan.config import PlanConfig
from trajplan.envs.references import References
from trajplan.envs.rollout import EpisodeResult
from trajplan.errors import TrajplanError
from trajplan.evaluation.plot import plot_eval, plot_scores, run_labels
from trajplan.evaluation.scores import plan_diagnostics, stderr
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
        name += f"-critic{plan.critic_form}" if plan.critic else ""
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


# -- which evals count: one per run, comparable ones only ----------------------------------

RULE = (
    "one eval per run: its newest complete eval with its group's settings (env, dataset, "
    "planning settings, weights, episode cap; full-length settings first, then those most "
    "runs share); interrupted, older and other-setting evals are left out"
)


@dataclass
class EvalFile:
    """One eval.json found for a comparison: where it is, what it says, whose run it is."""

    path: Path
    doc: dict[str, Any]
    run: Path  # the run it evaluated: RUN of RUN/eval/..., else its recorded checkpoint
    group: str  # the group it goes to (LABEL=PATH, else policy and dataset)

    @property
    def settings(self) -> dict[str, Any]:
        """What must agree for two evals to pool (the planner's mode gives the same tokens)."""
        plan = {k: v for k, v in (self.doc.get("plan") or {}).items() if k != "mode"}
        return {
            "env": self.doc.get("gym_id") or self.doc.get("env"),
            "dataset": self.doc.get("dataset_id"),
            "weights": self.doc.get("weights") or "last",
            "episode_steps": self.doc.get("episode_steps"),
            "reference": self.doc["summary"].get("reference"),
            **{f"plan.{k}": v for k, v in plan.items()},
        }

    @property
    def newness(self) -> tuple:
        return (str(self.doc.get("created") or ""), self.path.stat().st_mtime)


@dataclass
class Selection:
    """What `select_evals` kept (group label -> one eval per run) and left out, and why."""

    groups: dict[str, list[EvalFile]]
    left_out: list[tuple[Path, str]]
    rule: str = RULE

    def to_dict(self) -> dict[str, Any]:
        gone = [{"path": str(p), "reason": r} for p, r in self.left_out]
        return {"rule": self.rule, "left_out": gone}


def find_eval_files(path: str | Path) -> list[Path]:
    """The eval.json files a path stands for: the file itself; an eval folder; a run's eval/
    (every evaluation in it); a run (RUN/eval/*); a folder of runs (*/eval/*) or of
    `eval --out` folders (*/eval.json)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        if (p / "eval.json").is_file():
            return [p / "eval.json"]
        patterns = ("*/eval.json", "eval/eval.json", "eval/*/eval.json", "*/eval/*/eval.json")
        found = sorted({f for pattern in patterns for f in p.glob(pattern) if f.is_file()})
        if found:
            return found
    raise TrajplanError(f"no eval.json at {p}: run `trajplan eval` first")


def group_key(doc: dict[str, Any]) -> str:
    """Default group of an eval.json: its policy (TT, BC, IQL) and dataset."""
    policy = str((doc.get("plan") or {}).get("policy") or "tt").upper()
    return f"{policy} {doc.get('dataset_id') or doc.get('env') or '?'}"


def _run_of(path: Path, doc: dict[str, Any]) -> Path:
    for folder in (path.parent, path.parent.parent):
        if folder.name == "eval":  # RUN/eval/eval.json, RUN/eval/<what>/eval.json
            return folder.parent.resolve()
    return Path(str(doc.get("checkpoint") or path.parent)).resolve()


def _differences(mine: dict[str, Any], theirs: dict[str, Any]) -> str:
    keys = [k for k in dict.fromkeys([*mine, *theirs]) if mine.get(k) != theirs.get(k)]
    return ", ".join(f"{k} {mine.get(k)} (group: {theirs.get(k)})" for k in keys[:3])


def select_evals(items: Sequence[str | Path]) -> Selection:
    """The evals that count, by `RULE`: every item (`PATH` or `LABEL=PATH`; PATH as
    `find_eval_files` reads it) grouped (LABEL, else `group_key`), then in each group one
    eval per run. Every eval left out is listed with the reason."""
    if not items:
        raise TrajplanError("give at least one eval.json, eval folder or run directory")
    found: dict[Path, EvalFile] = {}
    left_out: list[tuple[Path, str]] = []
    for item in items:
        text = str(item)
        label, sep, rest = text.partition("=")
        path, label = (rest, label) if sep and label and not Path(text).exists() else (text, "")
        if Path(path).is_file() and Path(path).suffix != ".json":  # OUT/seed* finds seed0.log
            left_out.append((Path(path), "not an eval file"))
            continue
        for f in find_eval_files(path):
            if f.resolve() in found:
                continue  # the same file, named twice
            doc = read_eval(f)
            found[f.resolve()] = EvalFile(f, doc, _run_of(f, doc), label or group_key(doc))
    groups: dict[str, list[EvalFile]] = {}
    for e in found.values():
        if e.doc.get("interrupted") or e.doc["summary"].get("interrupted"):
            left_out.append((e.path, "interrupted: partial episodes"))
        else:
            groups.setdefault(e.group, [])
            groups[e.group].append(e)
    kept = {g: _one_per_run(members, left_out) for g, members in groups.items()}
    kept = {g: members for g, members in kept.items() if members}
    if not kept:
        why = left_out[0][1] if left_out else "none found"
        raise TrajplanError(f"no complete eval to compare ({left_out[0][0]}: {why})")
    return Selection(kept, left_out)


def _one_per_run(members: list[EvalFile], left_out: list[tuple[Path, str]]) -> list[EvalFile]:
    """The group's settings (full-length first, then the most runs, then the newest), then
    each run's newest eval with them; the rest go to left_out."""
    by_settings: dict[str, list[EvalFile]] = {}
    for e in members:
        by_settings.setdefault(json.dumps(e.settings, sort_keys=True, default=str), []).append(e)

    def rank(evals: list[EvalFile]) -> tuple:
        full = evals[0].settings["episode_steps"] is None
        return (full, len({e.run for e in evals}), max(e.newness for e in evals))

    chosen = max(by_settings.values(), key=rank)
    group_settings, ids = chosen[0].settings, {id(e) for e in chosen}
    runs: dict[Path, EvalFile] = {}
    for e in members:
        if id(e) not in ids:
            left_out.append((e.path, "other settings: " + _differences(e.settings, group_settings)))
        elif e.run not in runs or e.newness > runs[e.run].newness:
            if e.run in runs:
                left_out.append((runs[e.run].path, f"an older eval of the same run ({e.run})"))
            runs[e.run] = e
        else:
            left_out.append((e.path, f"an older eval of the same run ({e.run})"))
    return sorted(runs.values(), key=lambda e: str(e.run))  # however they were named


def plot_eval_scores(evals: Sequence[str | Path], out: str | Path) -> tuple[Path, Selection]:
    """Bars of the normalized score of each run, by `select_evals`'s rule (one eval per run);
    items are eval.json files, eval folders or run directories. Returns the figure and the
    selection (what was left out and why)."""
    from trajplan.evaluation.plot import check_figure_path

    check_figure_path(out)  # before anything is read
    selection = select_evals(evals)
    chosen = [e for members in selection.groups.values() for e in members]
    for e in chosen:
        if e.doc["summary"].get("score_mean") is None:
            raise TrajplanError(
                f"{e.path} has no normalized score (its env has no reference scores)"
            )
    labels = run_labels([e.run for e in chosen])
    return plot_scores([e.doc for e in chosen], labels, out), selection
