"""Share runs on the Hugging Face Hub: a run directory plus a generated model card.

`build_folder` stages what a user needs to plan with a run (TT: config.json, weights last
and best, the discretizer, metrics; BC: config.json, the policy, metrics), its evaluation
(RUN/eval/eval.json and eval.png) when there is one, `train-config.yaml` to retrain it, and
README.md, the model card: env, dataset, scores with the source of their reference scores,
training summary, config, and the commands to use and to reproduce the run. The resume
state (state.pt, optimizer included) and TensorBoard logs stay home.

`push` uploads that folder and `pull` downloads a repository into a folder, which is a
normal run directory: `trajplan plan/eval --checkpoint DIR` take it as it is. The network
calls are `_upload` and `_download`; everything else works offline.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from trajplan import __version__, runs
from trajplan.checkpoint import read_manifest
from trajplan.data.store import dataset_info
from trajplan.errors import TrajplanError
from trajplan.evaluation.evalfiles import eval_path, latest_eval

TT_FILES = ("config.json", "model.safetensors", "best.safetensors", "discretizer.safetensors")
BC_FILES = ("config.json", "policy.actor.safetensors")
OPTIONAL_FILES = ("metrics.jsonl", "eval/eval.json", "eval/eval.png")
CARD = "README.md"
TRAIN_CONFIG = "train-config.yaml"


def run_kind(run_dir: str | Path) -> str:
    """'tt' or 'bc' for a run directory the hub shares; anything else is a TrajplanError."""
    kind = runs.run_kind(run_dir)
    if kind == "tt":
        read_manifest(run_dir)  # raises a clear error for anything that is not a TT run
    elif kind != "bc":
        raise TrajplanError(f"{run_dir}: the hub shares TT and BC runs, not {kind} runs yet")
    return kind


def _read_json(path: Path) -> dict[str, Any]:
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
    return [
        f"trajplan bc --dataset {doc.get('dataset_id')} --out runs/{name}-again --steps "
        f"{c.get('steps')} --hidden {hidden} --lr {c.get('lr')} --seed {c.get('seed')}"
    ]


def model_card(run_dir: str | Path, repo_id: str | None = None, name: str | None = None) -> str:
    """README.md for the Hub: what the run is, its scores (RUN/eval/eval.json), how to use
    and reproduce it. `name`: the run's folder name in the commands (default: run_dir's)."""

    run = Path(run_dir)
    kind = run_kind(run)
    name = name or run.name
    doc = _read_json(run / "config.json")
    evaluation = _read_json(run / "eval" / "eval.json")  # staged by build_folder
    gym_id = str(doc.get("env_id") or evaluation.get("gym_id") or doc.get("env") or "?")
    env = str(doc.get("env") or gym_id)
    dataset = doc.get("dataset_id") or "?"
    what = "Trajectory Transformer" if kind == "tt" else "Behaviour-cloning baseline"
    repo = repo_id or "USER/REPO"
    front = {
        "library_name": "trajplan",
        "tags": ["reinforcement-learning", "offline-reinforcement-learning", "trajplan",
                 "trajectory-transformer" if kind == "tt" else "behavior-cloning", gym_id],
    }  # fmt: skip
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
    else:
        facts = [
            f"- policy: MLP {c.get('hidden')}, {c.get('steps')} Adam steps, last loss "
            f"{_fmt(doc.get('last_loss'), None, 4)}, "
            f"validation loss {_fmt(doc.get('val_loss'), None, 4)}",
        ]
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


def build_folder(
    run_dir: str | Path,
    dest: str | Path,
    repo_id: str | None = None,
    evaluation: str | Path | None = None,
) -> Path:
    """Stage the upload: the run's files, its evaluation, the retrain config and the card.

    evaluation: an eval.json to share instead of RUN/eval/eval.json (e.g. one written with
    `trajplan eval --out`); its eval.png comes along when it is beside it.
    """

    run, out = Path(run_dir), Path(dest)
    kind = run_kind(run)
    if out.exists() and any(out.iterdir()):
        raise TrajplanError(f"{out} already exists and is not empty")
    copies = {n: run / n for n in (*(TT_FILES if kind == "tt" else BC_FILES), *OPTIONAL_FILES)}
    chosen = eval_path(evaluation) if evaluation is not None else latest_eval(run)
    if chosen is not None:
        copies.update({"eval/eval.json": chosen, "eval/eval.png": chosen.with_suffix(".png")})
    for name, src in copies.items():
        if src.is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out / name)
        elif name not in OPTIONAL_FILES:
            raise TrajplanError(f"{run} is missing {name}: nothing to share yet")
    if kind == "tt":
        config = _read_json(run / "config.json").get("config", {})
        (out / TRAIN_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    (out / CARD).write_text(model_card(out, repo_id, name=run.name))
    return out


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise TrajplanError("the Hub needs huggingface_hub: pip install 'trajplan[hub]'") from None
    return huggingface_hub


def _upload(folder: Path, repo_id: str, private: bool, token: str | None) -> str:
    """The network call of `push`: create the model repo (if new) and upload the folder."""
    hub = _hub()
    api = hub.HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="model",
        commit_message="Upload trajplan run",
    )  # fmt: skip
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")


def _download(repo_id: str, out: Path, revision: str | None, token: str | None) -> None:
    """The network call of `pull`: the repository's files into `out`."""
    _hub().snapshot_download(
        repo_id=repo_id, repo_type="model", local_dir=str(out), revision=revision, token=token
    )


def push(
    run_dir: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    evaluation: str | Path | None = None,
) -> str:
    """Upload a run (TT or BC) with its model card; returns the commit's URL."""
    with tempfile.TemporaryDirectory(prefix="trajplan-hub-") as tmp:
        folder = build_folder(run_dir, Path(tmp) / "upload", repo_id, evaluation)
        return _upload(folder, repo_id, private, token)


def pull(
    repo_id: str, out: str | Path, revision: str | None = None, token: str | None = None
) -> Path:
    """Download a run pushed with `push` into `out` (new or empty); returns it, checked."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise TrajplanError(f"{out} already exists and is not empty: choose another --out")
    _download(repo_id, out, revision, token)
    try:
        run_kind(out)
    except TrajplanError as exc:
        raise TrajplanError(f"{repo_id} is not a trajplan run ({exc})") from None
    return out
