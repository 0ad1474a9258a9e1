"""Share runs on the Hugging Face Hub: a run directory plus a generated model card.

`build_folder` stages what a user needs to plan with a run (TT: config.json, weights last
and best, the discretizer, metrics; BC: config.json, the policy, metrics; IQL: those and
the critic, which TT + Q's `--critic` takes), its evaluation
(RUN/eval/eval.json and eval.png) when there is one, `train-config.yaml` to retrain it, and
README.md, the model card (`trajplan.hub.model_card`: env, dataset, scores and the
source of their reference scores, training summary, config, the commands to use and to
reproduce the run). The resume
state (state.pt, optimizer included) and TensorBoard logs stay home. A run still training
may write a checkpoint while it is copied: the copy is checked to be of one checkpoint
(config.json's steps against those in the weights files) and made again if it is not.

`push` uploads that folder and `pull` downloads a repository into a folder, which is a
normal run directory: `trajplan plan/eval --checkpoint DIR` take it as it is. The network
calls are `_upload` and `_download` (a failure is one line: unreachable, or refused, and
why); everything else works offline.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from trajplan.errors import TrajplanError
from trajplan.evaluation.evalfiles import eval_path, latest_eval
from trajplan.guards import check_disk
from trajplan.hub.model_card import TRAIN_CONFIG, model_card, read_json
from trajplan.runs.checkpoint import read_manifest
from trajplan.runs.load import run_kind as format_kind

TT_FILES = ("config.json", "model.safetensors", "best.safetensors", "discretizer.safetensors")
BC_FILES = ("config.json", "policy.actor.safetensors")
IQL_FILES = (*BC_FILES, "critic.safetensors")
KIND_FILES = {"tt": TT_FILES, "bc": BC_FILES, "iql": IQL_FILES}  # what each kind shares
OPTIONAL_FILES = ("metrics.jsonl", "eval/eval.json", "eval/eval.png")
CARD = "README.md"


def run_kind(run_dir: str | Path) -> str:
    """'tt', 'bc' or 'iql' for a run directory the hub shares; anything else is a
    TrajplanError."""
    kind = format_kind(run_dir)  # by the format in config.json
    if kind == "tt":
        read_manifest(run_dir)  # raises a clear error for anything that is not a TT run
    elif kind not in KIND_FILES:
        raise TrajplanError(f"{run_dir}: the hub shares TT, BC and IQL runs, not {kind} runs")
    return kind


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
    copies = {n: run / n for n in (*KIND_FILES[kind], *OPTIONAL_FILES)}
    chosen = eval_path(evaluation) if evaluation is not None else latest_eval(run)
    if chosen is not None:
        copies.update({"eval/eval.json": chosen, "eval/eval.png": chosen.with_suffix(".png")})
    sizes = [f.stat().st_size for f in copies.values() if f.is_file()]
    check_disk(out, sum(sizes) + 2**16, max(sizes, default=0), "the staged upload")
    created = not out.exists()
    try:
        for attempt in range(COPY_TRIES):  # a run in training may write a checkpoint meanwhile
            _copy(run, copies, out)
            _verify(out, kind, run)  # each file is whole (renamed into place): load it
            torn = _torn_checkpoint(out) if kind == "tt" else None
            if torn is None:
                break
            if attempt == COPY_TRIES - 1:
                shutil.rmtree(out, ignore_errors=True)
                raise TrajplanError(
                    f"{run} wrote checkpoints while it was copied ({torn}), {COPY_TRIES} times: "
                    "push it between checkpoints or when its training ends"
                )
            time.sleep(0.5)
        if kind == "tt":
            config = read_json(run / "config.json").get("config", {})
            (out / TRAIN_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        (out / CARD).write_text(model_card(out, repo_id, name=run.name))
    except (OSError, TrajplanError) as exc:  # disk full meanwhile, bad weights: no stage
        shutil.rmtree(out, ignore_errors=True)
        if not created:
            out.mkdir()  # as it was: empty
        if isinstance(exc, TrajplanError):
            raise
        raise TrajplanError(f"cannot write {out}: {exc.strerror or exc} (disk full?)") from None
    return out


def _verify(folder: Path, kind: str, run: Path) -> None:
    """The staged copy's weights load as the run's kind would, before anything is uploaded:
    a truncated, foreign or NaN / inf file is one TrajplanError naming the run's file (a
    TT run's was a traceback, a BC or IQL run's was uploaded as it was)."""
    from trajplan.model.actor import load_actor
    from trajplan.runs.checkpoint import load_state_dict_file
    from trajplan.runs.iql import load_critic

    def name(exc: TrajplanError) -> TrajplanError:
        text = str(exc).replace(str(folder), str(run))
        return TrajplanError(f"not pushed: {text}")

    try:
        if kind == "tt":
            for file in TT_FILES[1:]:
                load_state_dict_file(folder / file)
        else:
            load_actor(folder / BC_FILES[1])
            if kind == "iql":
                load_critic(folder / IQL_FILES[2])
    except TrajplanError as exc:
        raise name(exc) from None


COPY_TRIES = 5


def _copy(run: Path, copies: dict[str, Path], out: Path) -> None:
    for name, src in copies.items():
        if src.is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out / name)
        elif name not in OPTIONAL_FILES:
            raise TrajplanError(f"{run} is missing {name}: nothing to share yet")


def _weights_step(path: Path) -> str | None:
    """The optimizer step a weights file records in its metadata (None: none recorded)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return (f.metadata() or {}).get("step")


def _torn_checkpoint(folder: Path) -> str | None:
    """None when the copied config.json, model.safetensors and best.safetensors are of one
    checkpoint (their steps agree), else what disagrees."""
    doc = read_json(folder / "config.json")
    last, best = _weights_step(folder / TT_FILES[1]), _weights_step(folder / TT_FILES[2])
    if last is not None and last != str(doc.get("step")):
        return f"config.json at step {doc.get('step')}, model.safetensors at {last}"
    if best is not None and doc.get("best_step") is not None and best != str(doc["best_step"]):
        return f"config.json's best step {doc['best_step']}, best.safetensors at {best}"
    return None


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise TrajplanError("the Hub needs huggingface_hub: pip install 'trajplan[hub]'") from None
    return huggingface_hub


def _upload(folder: Path, repo_id: str, private: bool, token: str | None) -> str:
    """The network call of `push`: create the model repo (if new) and upload the folder."""
    hub = _hub()
    try:
        api = hub.HfApi(token=token)
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model",
            commit_message="Upload trajplan run",
        )  # fmt: skip
    except Exception as exc:  # network, login, permissions: one line, not a traceback
        raise hub_error(exc, f"push to {repo_id}") from None
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")


OFFLINE = {"ConnectError", "ConnectionError", "ConnectTimeout", "Timeout", "TimeoutException",
           "LocalEntryNotFoundError", "OfflineModeIsEnabled"}  # fmt: skip


def hub_error(exc: BaseException, what: str) -> TrajplanError:
    """One line for a failed Hub call: unreachable (offline?) or refused, with its reason."""
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    reason = (lines[0] if lines else type(exc).__name__)[:200]
    if any(c.__name__ in OFFLINE for c in type(exc).__mro__):
        return TrajplanError(f"cannot reach the Hugging Face Hub to {what} (offline?): {reason}")
    return TrajplanError(f"the Hugging Face Hub refused to {what}: {reason}")


def _download(repo_id: str, out: Path, revision: str | None, token: str | None) -> None:
    """The network call of `pull`: the repository's files into `out`."""
    hub = _hub()
    try:
        hub.snapshot_download(
            repo_id=repo_id, repo_type="model", local_dir=str(out), revision=revision, token=token
        )
    except Exception as exc:  # network, missing repository: one line, not a traceback
        raise hub_error(exc, f"pull {repo_id}") from None


def push(
    run_dir: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    evaluation: str | Path | None = None,
) -> str:
    """Upload a run (TT, BC or IQL) with its model card; returns the commit's URL."""
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
    created = not out.exists()
    try:
        _download(repo_id, out, revision, token)
    except TrajplanError:
        if created:  # leave no half-made folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    try:
        run_kind(out)
    except TrajplanError as exc:
        raise TrajplanError(f"{repo_id} is not a trajplan run ({exc})") from None
    return out
