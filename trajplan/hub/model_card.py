"""The model card of a shared run (README.md of a hub folder, `trajplan.hub.share`): env, dataset,
scores with the source of their reference scores, training summary, config, and the
commands to use and to reproduce the run. Everything here reads files; nothing uploads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from trajplan import __version__
from trajplan.data.store import dataset_info
from trajplan.runs.load import run_kind

TRAIN_CONFIG = "train-config.yaml"  # the staged config a run is retrained from
KIND_NAMES = {"tt": "Trajectory Transformer", "bc": "Behaviour-cloning baseline",
              "iql": "Implicit Q-Learning (IQL) baseline and critic"}  # fmt: skip


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file, or {} when it is missing, unreadable or not an object."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _fmt(mean: float | None, se: float | None, digits: int = 1) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def _scores_section(evaluation: dict[str, Any]) -> list[str]:
    if not evaluation:
        return ["No evaluation was shared with this run: `trajplan eval DIR --episodes 10`."]
    s = evaluation["summary"]
    lines = [
        "| episodes | normalized score (mean ± stderr) | return | reference scores |",
        "|---|---|---|---|",
        f"| {s.get('episodes')} | {_fmt(s.get('score_mean'), s.get('score_stderr'))} "
        f"| {_fmt(s.get('return_mean'), s.get('return_stderr'))} | {s.get('reference')} |",
        "",
        f"Normalized score = 100 * (return - ref_min) / (ref_max - ref_min), with reference "
        f"scores from: {s.get('reference')}. Episodes in {evaluation.get('gym_id')}, seeds "
        f"{', '.join(str(e['seed']) for e in evaluation.get('episodes', []))}.",
    ]
    if evaluation.get("note"):
        lines += ["", f"**Note:** {evaluation['note']}."]
    if evaluation.get("plan"):
        lines += ["", f"Planning settings: `{json.dumps(evaluation['plan'])}`."]
    return lines


def _dataset_line(dataset_id: str) -> str:
    """The dataset, with its own description when it is on this machine."""

    try:
        info = dataset_info(dataset_id)
    except Exception:  # not local (or unreadable): the id is all we know
        return f"- dataset: `{dataset_id}` (Minari)"
    return (
        f"- dataset: `{dataset_id}` (Minari, {info['episodes']:,} episodes, {info['steps']:,} "
        f"steps): {info.get('description') or 'no description'}"
    )


def _reproduce(kind: str, doc: dict[str, Any], name: str) -> list[str]:
    if kind == "tt":
        return [
            f"trajplan train --config {TRAIN_CONFIG} --out runs/{name}-again",
            "# the dataset must be on this machine: trajplan data list",
        ]
    c = doc.get("config", {})
    hidden = ",".join(str(h) for h in c.get("hidden", []))
    if kind == "iql":
        return [
            f"trajplan iql --dataset {doc.get('dataset_id')} --out runs/{name}-again --steps "
            f"{c.get('steps')} --hidden {hidden} --batch-size {c.get('batch_size')} --expectile "
            f"{c.get('expectile')} --temperature {c.get('temperature')} --seed {c.get('seed')}"
        ]
    return [
        f"trajplan bc --dataset {doc.get('dataset_id')} --out runs/{name}-again --steps "
        f"{c.get('steps')} --hidden {hidden} --lr {c.get('lr')} --seed {c.get('seed')}"
    ]


def _facts(kind: str, doc: dict[str, Any]) -> list[str]:
    """The model card's lines on what was trained (from the run's config.json)."""
    c = doc.get("config", {})
    if kind == "tt":
        m = c.get("model", {})
        n_params = doc.get("n_params")
        params = f", {n_params:,} parameters" if isinstance(n_params, int) else ""
        facts = [
            f"- model: {m.get('n_layer')} layers, width {m.get('n_embd')}, "
            f"{m.get('n_head')} heads{params}",
            f"- training: {doc.get('step')} steps, {doc.get('epoch')} epochs, "
            f"{int(doc.get('tokens') or 0):,} tokens, "
            f"last loss {_fmt(doc.get('last_loss'), None, 4)}, status {doc.get('status')}",
            "- weights: `model.safetensors` (last, used by default), `best.safetensors`",
        ]
    elif kind == "iql":
        last = doc.get("last") or {}
        facts = [
            f"- nets: MLPs {c.get('hidden')} (twin Q, V, actor), {doc.get('step')} of "
            f"{c.get('steps')} steps ({doc.get('status')}), expectile {c.get('expectile')}, "
            f"temperature {c.get('temperature')}, last Q loss {_fmt(last.get('q_loss'), None, 4)}",
            "- files: `policy.actor.safetensors` (the actor's mean), `critic.safetensors` "
            "(target twin Q and V: TT + Q's `--critic`)",
        ]
    else:
        facts = [
            f"- policy: MLP {c.get('hidden')}, {c.get('steps')} Adam steps, last loss "
            f"{_fmt(doc.get('last_loss'), None, 4)}, "
            f"validation loss {_fmt(doc.get('val_loss'), None, 4)}",
        ]
    return facts


def model_card(run_dir: str | Path, repo_id: str | None = None, name: str | None = None) -> str:
    """README.md for the Hub: what the run is, its scores (RUN/eval/eval.json), how to use
    and reproduce it. `name`: the run's folder name in the commands (default: run_dir's)."""

    run = Path(run_dir)
    kind = run_kind(run)
    name = name or run.name
    doc = read_json(run / "config.json")
    evaluation = read_json(run / "eval" / "eval.json")  # staged by build_folder
    gym_id = str(doc.get("env_id") or evaluation.get("gym_id") or doc.get("env") or "?")
    env = str(doc.get("env") or gym_id)
    dataset = doc.get("dataset_id") or "?"
    what = KIND_NAMES[kind]
    repo = repo_id or "USER/REPO"
    front = {
        "library_name": "trajplan",
        "tags": ["reinforcement-learning", "offline-reinforcement-learning", "trajplan",
                 {"tt": "trajectory-transformer", "bc": "behavior-cloning",
                  "iql": "implicit-q-learning"}[kind], gym_id],
    }  # fmt: skip
    c = doc.get("config", {})
    facts = _facts(kind, doc)
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {what} for {gym_id}, trained on `{dataset}`",
        "",
        f"A trajplan run (offline RL, Minari data, Gymnasium MuJoCo), made with trajplan "
        f"{doc.get('trajplan_version') or __version__}.",
        "",
        f"- env: `{env}` ({gym_id})",
        _dataset_line(str(dataset)),
        *facts,
        "",
        "## Scores",
        "",
        *_scores_section(evaluation),
        "",
        "## Use",
        "",
        "```bash",
        "pip install 'trajplan[hub]'",
        f"trajplan hub pull {repo} --out runs/{name}",
        f"trajplan eval runs/{name} --episodes 10",
        *([f"trajplan plan --checkpoint runs/{name}"] if kind == "tt" else []),
        *([f"trajplan eval TT_RUN --critic runs/{name}   # TT + Q"] if kind == "iql" else []),
        "```",
        "",
        "## Reproduce",
        "",
        "```bash",
        *_reproduce(kind, doc, name),
        "```",
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(c, sort_keys=False).strip(),
        "```",
        "",
    ]
    return "\n".join(lines)
