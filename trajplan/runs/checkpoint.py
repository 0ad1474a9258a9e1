"""The one checkpoint format: a run directory, written by train and read by plan/eval/collect.

    RUN/config.json              manifest: the full RunConfig (model dims filled in), env,
                                 dataset, reference scores and their source, trajplan
                                 version, n_params, progress (status, step, epoch, losses)
    RUN/model.safetensors        weights at the last checkpoint
    RUN/best.safetensors         weights at the checkpoint with the lowest epoch-mean
                                 training loss so far (the reference simply uses the last)
    RUN/best_eval.safetensors    weights with the best score of the evaluations during
                                 training (train.eval_every > 0; trajplan.training.live_eval)
    RUN/discretizer.safetensors  the bins (trajplan.data.tokens): a model is useless without them
    RUN/state.pt                 resume state: weights, optimizer, counters, RNG states
    RUN/metrics.jsonl            one JSON line per logged step and per epoch (to plot)

Every file is written to a temporary name and renamed. A checkpoint first writes all its
files (weights, state.pt, config.json) to temporary names and renames them, in that order,
only when all were written: a failed write (disk full) leaves the previous checkpoint as it
was, and a run killed at any moment still has a consistent last checkpoint (state.pt is
self-contained: resuming reads only it). `status` in config.json is
"starting" (no checkpoint yet), "running", "interrupted", "time_limit" (stopped by
train.time_limit_s) or "finished"; `find_latest_run` returns only the last two.
"""

from __future__ import annotations

import datetime as _dt
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import trajplan.runs.lifecycle as lifecycle
from trajplan import __version__
from trajplan.config import RunConfig
from trajplan.configs.convert import from_dict, to_dict
from trajplan.data.tokens import Discretizer
from trajplan.envs.registry import same_env
from trajplan.errors import TrajplanError
from trajplan.model.gpt import TrajectoryGPT
from trajplan.runtime import atomic_write, json_text, resolve_device, staged_writes

FORMAT = "trajplan-run/1"
CONFIG_FILE = "config.json"
LAST_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
BEST_EVAL_FILE = "best_eval.safetensors"
DISCRETIZER_FILE = "discretizer.safetensors"
STATE_FILE = lifecycle.STATE_FILE  # "state.pt"
METRICS_FILE = "metrics.jsonl"
WEIGHT_FILES = {"last": LAST_FILE, "best": BEST_FILE, "best-eval": BEST_EVAL_FILE}


@dataclass
class Checkpoint:
    """A trained model ready to plan with: weights on a device (eval mode) + its bins."""

    run_dir: Path
    config: RunConfig
    model: TrajectoryGPT
    discretizer: Discretizer
    env: str  # short name (e.g. "halfcheetah") or Gymnasium id, accepted by make_env
    dataset_id: str
    ref_min: float | None
    ref_max: float | None
    ref_source: str | None
    which: str = "last"  # a key of WEIGHT_FILES
    step: int = 0  # optimizer steps behind these weights
    meta: dict[str, Any] = field(default_factory=dict)  # the whole config.json


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


# -- writing -------------------------------------------------------------------------------


def weights_writer(model: TrajectoryGPT, metadata: dict[str, str]) -> Callable[[Path], Any]:
    """A function that writes the model's state dict as safetensors to a path."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "trajplan-weights/1", **metadata}
    return lambda p: save_file(tensors, str(p), metadata=meta)


def save_weights(path: str | Path, model: TrajectoryGPT, metadata: dict[str, str]) -> Path:
    """Write the model's state dict as safetensors (atomic)."""
    return atomic_write(path, weights_writer(model, metadata))


def rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy and Python, storable with weights_only."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    key = n["key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: str | Path,
    model: TrajectoryGPT,
    cfg: RunConfig,
    manifest: dict[str, Any],
    discretizer: Discretizer,
    train_state: dict[str, Any] | None = None,
    is_best: bool = False,
) -> Path:
    """Write one checkpoint into run_dir (see the module docstring for files and order).

    manifest: the config.json fields besides `config` (env, dataset_id, ref scores, status,
    step, ...). train_state: what `trainer` needs to resume (saved as state.pt).
    """
    run_dir = Path(run_dir)
    meta = {"step": str(manifest.get("step", 0)), "epoch": str(manifest.get("epoch", 0))}
    weights = weights_writer(model, meta)
    with staged_writes() as stage:  # all files or none: a full disk keeps the last checkpoint
        stage(run_dir / LAST_FILE, weights)
        if is_best or not (run_dir / BEST_FILE).exists():
            stage(run_dir / BEST_FILE, weights)
        if not (run_dir / DISCRETIZER_FILE).exists():
            stage(run_dir / DISCRETIZER_FILE, discretizer.save)
        if train_state is not None:
            stage(run_dir / STATE_FILE, lambda p: torch.save(train_state, p))
        stage(run_dir / CONFIG_FILE, manifest_writer(cfg, manifest))
    return run_dir


def manifest_writer(cfg: RunConfig, manifest: dict[str, Any]) -> Callable[[Path], Any]:
    """A function that writes config.json: format, version, the manifest, the config."""

    doc = {
        "format": FORMAT,
        "trajplan_version": __version__,
        **manifest,
        "updated": now_iso(),
        "config": to_dict(cfg),
    }
    return lambda p: p.write_text(json_text(doc, indent=2) + "\n")


def write_manifest(run_dir: str | Path, cfg: RunConfig, manifest: dict[str, Any]) -> Path:
    """config.json alone (atomic)."""
    return atomic_write(Path(run_dir) / CONFIG_FILE, manifest_writer(cfg, manifest))


# -- reading -------------------------------------------------------------------------------


# The config a training was started with, written as it takes its run directory and
# removed when config.json is there: what `--resume` starts over with after a stop while
# loading the data (before config.json).
GIVEN_FILE = ".config-given.json"

# What a training leaves in its run directory before its first checkpoint.
STARTUP_FILES = {CONFIG_FILE, METRICS_FILE, "tensorboard", ".lock", GIVEN_FILE}


def note_given_config(run_dir: str | Path, cfg: RunConfig) -> Path | None:
    """Record the config a new training starts with in RUN/GIVEN_FILE (None: RUN already
    holds config.json, which says more)."""
    run_dir = Path(run_dir)
    if (run_dir / CONFIG_FILE).is_file():
        return None
    path = run_dir / GIVEN_FILE
    try:
        atomic_write(path, lambda p: p.write_text(json.dumps({"config": to_dict(cfg)})))
    except OSError as exc:
        raise TrajplanError(f"cannot write run directory {run_dir}: {exc.strerror}") from None
    return path


def has_checkpoint(run_dir: str | Path) -> bool:
    """True once a training has saved weights or a resume state into run_dir."""
    return any((Path(run_dir) / name).is_file() for name in (LAST_FILE, STATE_FILE))


def is_dead_end(run_dir: str | Path) -> bool:
    """A run directory that a training left before its first checkpoint (killed or crashed
    while starting): it holds nothing to lose, so a new training may start over in it
    (`trajplan.runs.lifecycle.is_dead_end` with TT's start-up files)."""
    return lifecycle.is_dead_end(run_dir, STARTUP_FILES)


def read_manifest(run_dir: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    """Parse RUN/config.json -> (RunConfig, the whole JSON document)."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise TrajplanError(f"run directory not found: {run_dir}")
    given = run_dir / GIVEN_FILE
    if not path.is_file() and given.is_file() and is_dead_end(run_dir):
        try:  # stopped while loading its data: --resume starts over with the config given
            doc = json.loads(given.read_text())
            return from_dict(RunConfig, doc["config"], where=str(given)), {"status": "starting"}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            pass  # damaged: as if it were not there
    if not path.is_file():
        hint = (
            ": a training stopped before it began; train into it again without --resume"
            if is_dead_end(run_dir)
            else ""
        )
        raise TrajplanError(f"{run_dir} is not a trajplan run directory (no {CONFIG_FILE}){hint}")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrajplanError(f"{path}: corrupt run config ({_first_line(exc)})") from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if isinstance(fmt, str) and fmt != FORMAT and fmt.startswith("trajplan-"):
        kind = fmt.removeprefix("trajplan-").split("/")[0].upper()  # trajplan-iql/2 -> IQL
        raise TrajplanError(
            f"{path}: format {fmt!r} (a {kind} run?), which this trajplan does not read (it "
            "reads trajplan-run/1, trajplan-bc/1, trajplan-iql/1): written by another "
            "version of trajplan?"
        )
    if not isinstance(doc, dict) or fmt != FORMAT or "config" not in doc:
        raise TrajplanError(f"{path}: not a trajplan run config (expected format {FORMAT})")
    cfg = from_dict(RunConfig, doc["config"], where=f"{path}: config")
    m = cfg.model
    if min(m.obs_dim, m.act_dim, m.vocab_size, m.block_size) <= 0:
        raise TrajplanError(f"{path}: model dimensions are missing (obs/act/vocab/block)")
    return cfg, doc


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors weights file; any damage is one clear TrajplanError."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise TrajplanError(f"missing weights file {path} (no checkpoint was written yet?)")
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...: truncated or not safetensors
        raise TrajplanError(f"{path}: corrupt or truncated weights ({_first_line(exc)})") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise TrajplanError(
            f"{path}: weights hold NaN or inf ({bad[0]}{' and more' if len(bad) > 1 else ''}): "
            "the training diverged; retrain with a lower train.lr"
        )
    return state


def build_model(cfg: RunConfig, state: dict[str, torch.Tensor], where: Path) -> TrajectoryGPT:
    """A TrajectoryGPT for cfg.model carrying `state`; shape/key mismatch -> TrajplanError."""
    try:
        model = TrajectoryGPT(cfg.model)
    except (ValueError, TrajplanError) as exc:
        raise TrajplanError(f"{where}: invalid model config ({_first_line(exc)})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise TrajplanError(
            f"{where}: weights do not match the run's config.json ({detail})"
        ) from None
    return model


def weights_path(run_dir: str | Path, which: str) -> Path:
    """The weights file `which` (a key of WEIGHT_FILES) of a TT run, or a one-line error."""
    run_dir = Path(run_dir)
    if which not in WEIGHT_FILES:
        choices = ", ".join(WEIGHT_FILES)
        raise TrajplanError(f"weights must be one of {choices}, got {which!r}")
    path = run_dir / WEIGHT_FILES[which]
    if not path.exists():
        why = (
            "it was trained without evaluations (train.eval_every > 0 keeps the best-scoring "
            "weights)"
            if which == "best-eval"
            else "not a TT run directory, or it has no checkpoint yet"
        )
        raise TrajplanError(f"{run_dir} has no {WEIGHT_FILES[which]}: {why}")
    return path


def load_checkpoint(
    path: str | Path, device: str | torch.device = "auto", which: str = "last"
) -> Checkpoint:
    """Load a run directory (or one of its .safetensors files) for planning.

    which: "last" (the weights at the end of training, as the reference evaluates),
    "best" (lowest epoch-mean training loss) or "best-eval" (best score of the evaluations
    during training). The model is in eval mode on `device`.
    """
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        run_dir, weights = path.parent, path
        which = {v: k for k, v in WEIGHT_FILES.items()}.get(path.name, path.stem)
    else:
        run_dir = path
        weights = weights_path(path, which) if which != "last" else path / LAST_FILE
    cfg, doc = read_manifest(run_dir)
    model = build_model(cfg, load_state_dict_file(weights), weights)
    disc = Discretizer.load(run_dir / DISCRETIZER_FILE)
    if disc.dim != cfg.model.transition_dim or disc.n_bins != cfg.model.vocab_size:
        raise TrajplanError(
            f"{run_dir}: discretizer ({disc.dim} dims, {disc.n_bins} bins) does not match the "
            f"model ({cfg.model.transition_dim} dims, {cfg.model.vocab_size} bins)"
        )
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    model = model.to(dev).eval()
    return Checkpoint(
        run_dir=run_dir,
        config=cfg,
        model=model,
        discretizer=disc,
        env=str(doc.get("env") or cfg.env or ""),
        dataset_id=str(doc.get("dataset_id") or cfg.dataset or ""),
        ref_min=doc.get("ref_min"),
        ref_max=doc.get("ref_max"),
        ref_source=doc.get("ref_source"),
        which=which,
        step=int(doc.get("step", 0)),
        meta=doc,
    )


def load_train_state(run_dir: str | Path) -> dict[str, Any]:
    """RUN/state.pt for resuming; damage or absence -> TrajplanError."""
    return lifecycle.load_state(Path(run_dir), FORMAT, "TT", "was it deleted?")


def find_latest_run(env: str, runs_root: str | Path = "runs") -> Path:
    """The most recently finished run for `env` under runs_root (by finish time): its
    run directories and those one level down (`train --seeds`' OUT/seed<S>)."""

    root = Path(runs_root)
    if not root.is_dir():
        raise TrajplanError(
            f"no runs directory {root}: train a model first (trajplan train --env {env})"
        )
    best: tuple[str, float, Path] | None = None
    for cfg_path in [*root.glob(f"*/{CONFIG_FILE}"), *root.glob(f"*/*/{CONFIG_FILE}")]:
        try:
            doc = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(doc, dict) or doc.get("status") not in ("finished", "time_limit"):
            continue
        if not same_env(str(doc.get("env") or ""), env):
            continue
        if not (cfg_path.parent / LAST_FILE).is_file():
            continue
        key = (str(doc.get("finished") or ""), cfg_path.stat().st_mtime, cfg_path.parent)
        if best is None or key[:2] > best[:2]:
            best = key
    if best is None:
        raise TrajplanError(
            f"no finished run for {env} under {root}: train one (trajplan train --env {env}) "
            "or pass a run directory"
        )
    return best[2]
