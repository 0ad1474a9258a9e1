"""Which evals count when many runs are compared (`select_evals`, the one rule `trajplan
aggregate` and `trajplan plot --scores` follow): one run counts once (an IQL run's snapshots
are that run), evals that are not comparable never pool, each policy (what changed it: TT's
horizon, critic, prior, objective; wBC's weighting; a goal) is a group of its own, and every
eval left out is listed with the eval kept instead and why."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajplan.errors import TrajplanError
from trajplan.evaluation.evalfiles import read_eval
from trajplan.evaluation.plot import plot_scores, run_labels

RULE = (
    "one eval per run: its newest complete eval with its group's settings (env, dataset, "
    "planning settings, weights, episode cap; full-length settings first, then those most "
    "runs share); groups are policies (TT's horizon, critic, prior, objective; BC's weighting; "
    "a goal) on a dataset; a run's snapshots count as that run, with its latest step; "
    "interrupted, older and other-setting evals are left out"
)


@dataclass
class EvalFile:
    """One eval.json found for a comparison: where it is, what it says, whose run it is."""

    path: Path
    doc: dict[str, Any]
    run: Path  # the run it evaluated: RUN of RUN/eval/..., else its recorded checkpoint
    group: str  # the group it goes to (LABEL=PATH, else `group_key`: policy and dataset)
    run_doc: dict[str, Any] = field(default_factory=dict)  # the run's config.json ({}: none)
    snapshot: Path | None = None  # the snapshot folder it evaluated (RUN/snapshots/step_K)

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
    def train_step(self) -> int:
        """The training step of the weights it evaluated, as far as its run says (a
        snapshot's step; -1 when unknown), so a run's latest snapshot speaks for it."""
        step = self.run_doc.get("step") if self.snapshot is not None or self._has_snaps else None
        return step if isinstance(step, int) and not isinstance(step, bool) else -1

    @property
    def _has_snaps(self) -> bool:
        return (self.run / "snapshots").is_dir()

    @property
    def newness(self) -> tuple:
        return (
            self.train_step,
            self.snapshot is None,  # the run itself before its snapshot of the same step
            str(self.doc.get("created") or ""),
            self.path.stat().st_mtime,
        )

    @property
    def policy(self) -> str:
        return policy_name(self.doc, self.run_doc)


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


def policy_name(doc: dict[str, Any], run_doc: dict[str, Any] | None = None) -> str:
    """What acted in an eval, with everything that changes the policy: "TT h15", "TT + Q(iql)
    h15 prior(iql)", "TT h15 likelihood", "TT h15 goal(0,1)", "BC", "wBC(2)", "BC noise(0.1)",
    "IQL". From its eval.json's plan and (weighting, goal) its run's config.json."""
    plan = doc.get("plan") or {}
    config = (run_doc or {}).get("config")
    config = config if isinstance(config, dict) else {}
    kind = str(plan.get("policy") or "tt")

    def short(path: Any) -> str:  # a run folder's or a file's name
        name = Path(str(path)).name
        return name.removesuffix(".safetensors").removesuffix(".actor") or str(path)

    if kind == "tt":
        name = "TT"
        if plan.get("critic"):
            name += f" + Q({short(plan['critic'])})"
        parts = [name] + ([f"h{plan['horizon']}"] if plan.get("horizon") is not None else [])
        if plan.get("prior"):
            parts.append(f"prior({short(plan['prior'])})")
        if plan.get("objective") not in (None, "return"):
            parts.append(str(plan["objective"]))
        data = config.get("data")
        goal = data.get("goal_dims") if isinstance(data, dict) else None
    else:
        weighting = config.get("action_weighting") if kind == "bc" else None
        parts = [f"wBC({weighting:g})" if _positive(weighting) else kind.upper()]
        if plan.get("action_noise"):
            parts.append(f"noise({plan['action_noise']:g})")
        goal = config.get("goal_dims")
    if goal:
        parts.append(f"goal({goal})")
    return " ".join(parts)


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def group_key(doc: dict[str, Any], run_doc: dict[str, Any] | None = None) -> str:
    """Default group of an eval.json: its policy, with what changed it (`policy_name`), and
    its dataset."""
    return f"{policy_name(doc, run_doc)} {doc.get('dataset_id') or doc.get('env') or '?'}"


def _run_config(folder: Path) -> dict[str, Any]:
    try:
        doc = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _run_of(path: Path, doc: dict[str, Any]) -> tuple[Path, dict[str, Any], Path | None]:
    """(the run, the config.json of the folder evaluated, the snapshot folder or None): an
    IQL snapshot (RUN/snapshots/step_K, whose config records `snapshot_of`) is its run's."""
    folder = None
    for candidate in (path.parent, path.parent.parent):
        if candidate.name == "eval":  # RUN/eval/eval.json, RUN/eval/<what>/eval.json
            folder = candidate.parent.resolve()
            break
    if folder is None:
        folder = Path(str(doc.get("checkpoint") or path.parent)).resolve()
    if folder.suffix == ".safetensors":  # a TT run's weights file
        folder = folder.parent
    run_doc = _run_config(folder)
    owner = run_doc.get("snapshot_of")
    if not owner:
        return folder, run_doc, None
    run = folder.parent.parent if folder.parent.name == "snapshots" else Path(str(owner))
    return run.resolve(), run_doc, folder


def _differences(mine: dict[str, Any], theirs: dict[str, Any]) -> str:
    keys = [k for k in dict.fromkeys([*mine, *theirs]) if mine.get(k) != theirs.get(k)]
    return ", ".join(f"{k} {mine.get(k)} (kept: {theirs.get(k)})" for k in keys[:3])


def _step_text(e: EvalFile) -> str:
    return f"step {e.train_step}" if e.train_step >= 0 else "its step unknown"


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
            run, run_doc, snapshot = _run_of(f, doc)
            group = label or group_key(doc, run_doc)
            found[f.resolve()] = EvalFile(f, doc, run, group, run_doc, snapshot)
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
    each run's newest eval with them (of a run with snapshots: its latest step's); the rest
    go to left_out, each with the eval kept instead and why."""
    by_settings: dict[str, list[EvalFile]] = {}
    for e in members:
        by_settings.setdefault(json.dumps(e.settings, sort_keys=True, default=str), []).append(e)

    def rank(evals: list[EvalFile]) -> tuple:
        full = evals[0].settings["episode_steps"] is None
        return (full, len({e.run for e in evals}), max(e.newness for e in evals))

    chosen = max(by_settings.values(), key=rank)
    ids = {id(e) for e in chosen}
    runs: dict[Path, EvalFile] = {}
    for e in sorted((e for e in members if id(e) in ids), key=lambda e: e.newness):
        runs[e.run] = e  # the newest (the latest step) last
    for e in members:
        if id(e) not in ids:
            left_out.append((e.path, _other_settings(e, chosen, by_settings, runs, rank)))
        elif runs[e.run] is not e:
            left_out.append((e.path, _same_run(e, runs[e.run])))
    return sorted(runs.values(), key=lambda e: str(e.run))  # however they were named


def _other_settings(
    e: EvalFile,
    chosen: list[EvalFile],
    by_settings: dict[str, list[EvalFile]],
    kept: dict[Path, EvalFile],
    rank: Any,
) -> str:
    """Why an eval with other settings than its group's was left out: what differs, which
    eval was kept instead, and why those settings won."""
    winner = kept.get(e.run) or next(iter(kept.values()))
    mine = by_settings[json.dumps(e.settings, sort_keys=True, default=str)]
    full, n_runs, _ = rank(chosen)
    my_full, my_runs, _ = rank(mine)
    if full and not my_full:
        why = "full-length episodes count before capped ones"
    elif n_runs != my_runs:
        why = f"its settings are shared by {n_runs} run(s), these by {my_runs}"
    else:
        why = "as many runs share either settings: the newest eval's win"
    diff = _differences(e.settings, chosen[0].settings)
    return f"other settings: {diff}; kept {winner.path} instead ({why})"


def _same_run(e: EvalFile, winner: EvalFile) -> str:
    """Why a second eval of a run was left out, and which was kept."""
    if e.snapshot is not None or winner.snapshot is not None:
        mine = f"a snapshot ({_step_text(e)})" if e.snapshot is not None else _step_text(e)
        return (
            f"{mine} of the run {e.run}: a run counts once, with the eval of its latest "
            f"weights ({_step_text(winner)}: {winner.path})"
        )
    return f"an older eval of the same run ({e.run}): kept the newest, {winner.path}"


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
    runs = run_labels([e.run for e in chosen])
    labels = [f"{run}: {e.policy}" for run, e in zip(runs, chosen, strict=True)]
    return plot_scores([e.doc for e in chosen], labels, out), selection
