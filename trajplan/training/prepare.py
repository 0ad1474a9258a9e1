"""Run preparation: everything decided before the first step of a training run.

init_distributed   torchrun's rank and world (NCCL on GPU, gloo on CPU)
resolve_dataset    env and dataset from the config
open_run_dir       --out checked for a new run or a resume, and locked (rank 0):
                   the rules of `trajplan.runs.lifecycle`
prepare_run        config vs data vs an old run (resume), data loaded and tokenized,
                   model dims filled in, memory checked, the manifest of config.json
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from trajplan.config import RunConfig, parse_goal_dims
from trajplan.configs import dataset_level
from trajplan.configs.convert import to_dict
from trajplan.data.bins_report import merge_warning
from trajplan.data.episodes import data_fingerprint
from trajplan.data.tokens import Discretizer
from trajplan.data.transitions import load_episodes, prepare_episodes
from trajplan.envs.registry import env_for_dataset, resolve_env, same_env
from trajplan.errors import TrajplanError
from trajplan.guards import available_memory
from trajplan.runs import lifecycle
from trajplan.runs.checkpoint import (
    CONFIG_FILE,
    DISCRETIZER_FILE,
    STARTUP_FILES,
    has_checkpoint,
    is_dead_end,
    load_train_state,
    now_iso,
    read_manifest,
)
from trajplan.runtime import DirLock, resolve_device

# Fields that may change when a run is resumed (they steer the loop, not the result).
LOOP_FIELDS = (
    "epochs",
    "max_steps",
    "time_limit_s",
    "save_every",
    "save_every_min",
    "log_every",
    "compile",
    "eval_every",  # evaluation during training changes no training step
    "eval_episodes",
    "eval_episode_steps",
    "eval_seed",
)
DIM_FIELDS = ("obs_dim", "act_dim", "vocab_size", "block_size", "goal_dim")


@dataclass
class DistInfo:
    """Where this process sits in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """Read torchrun's env vars; start NCCL (GPU) or gloo (CPU) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return DistInfo(), dev
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), dev


def resolve_dataset(cfg: RunConfig) -> tuple[str | None, str, int | None]:
    """(env short name or None, dataset id, obs_keep) from cfg.env / cfg.dataset."""

    if cfg.env is None and cfg.dataset is None:
        raise TrajplanError("no env and no dataset: give --env NAME or --dataset ID")
    info = resolve_env(cfg.env) if cfg.env is not None else env_for_dataset(cfg.dataset or "")
    dataset = cfg.dataset or (info.dataset_id if info else None)
    if dataset is None:
        raise TrajplanError(f"env {cfg.env!r} has no default dataset: give --dataset ID")
    return (info.name if info else None), dataset, (info.obs_keep if info else None)


def fill_model_dims(cfg: RunConfig, obs_dim: int, act_dim: int, dataset: str) -> None:
    """Set model dims from the data; a config that states other dims is an error."""
    d = obs_dim + act_dim + 2
    want = {
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "vocab_size": cfg.data.n_bins,
        "block_size": cfg.data.seq_len * d - 1,
    }
    for key, value in want.items():
        given = getattr(cfg.model, key)
        if given not in (0, value):
            raise TrajplanError(
                f"config model.{key} = {given}, but dataset {dataset} with data.n_bins "
                f"{cfg.data.n_bins} and data.seq_len {cfg.data.seq_len} needs {value} "
                "(leave model dims at 0 to take them from the data)"
            )
        setattr(cfg.model, key, value)
    goal_dim = len(parse_goal_dims(cfg.data.goal_dims)) if cfg.data.goal_dims else 0
    if cfg.model.goal_dim not in (0, goal_dim):
        raise TrajplanError(
            f"config model.goal_dim = {cfg.model.goal_dim}, but data.goal_dims "
            f"{cfg.data.goal_dims!r} has {goal_dim} (leave it at 0)"
        )
    cfg.model.goal_dim = goal_dim


def min_train_bytes(cfg: RunConfig, world: int = 1, cpu: bool = True) -> int:
    """A lower bound on the memory of one training process: the [T, T] attention mask, the
    weights with their gradients and AdamW moments, and for one batch the logits (and their
    gradient) and the activations kept for backward (>= 10 floats per token, layer and
    embedding dim; a GPT block keeps about 16). On CPU the attention kernel also keeps the
    causal half of every layer's [T, T] probabilities per head for backward."""
    m = cfg.model
    t, c, d, n = m.block_size, m.n_embd, m.transition_dim, m.vocab_size
    b = math.ceil(cfg.train.batch_size / world)
    params = (n * d + 1) * c + t * c + m.n_layer * 12 * c * c + d * (n + 1) * c
    need = t * t + 16 * params + 4 * b * t * (10 * c * m.n_layer + 2 * (n + 1))
    if cpu:
        need += 4 * b * m.n_head * m.n_layer * t * t // 2
    return need


def check_memory(cfg: RunConfig, dev: torch.device, world: int = 1) -> None:
    """Refuse a config that cannot fit, instead of meeting the OOM killer mid-run."""
    need, have = min_train_bytes(cfg, world, dev.type == "cpu"), available_memory(dev)
    if have is None or need <= have:
        return
    gib = 2.0**30
    raise TrajplanError(
        f"this config needs at least {need / gib:,.1f} GiB to train ({cfg.model.block_size:,} "
        f"tokens per window from data.seq_len {cfg.data.seq_len}, batch {cfg.train.batch_size}"
        f"), {have / gib:,.1f} GiB are free on {dev}: lower data.seq_len or train.batch_size"
    )


def resume_config(saved: RunConfig, given: RunConfig, run_dir: Path) -> RunConfig:
    """The run's own config, with the loop fields (LOOP_FIELDS) and `plan` from `given`.

    Anything else that `given` sets differently is an error: the run would not continue
    the same training. Model dims left at 0 and env/dataset left empty count as unset.
    """
    s, g = to_dict(saved), to_dict(given)
    diffs = []
    for key in ("env", "dataset"):
        if g[key] is not None and g[key] != s[key]:
            diffs.append(f"{key}: run has {s[key]!r}, given {g[key]!r}")
    for section in ("data", "model", "train"):
        for key, value in g[section].items():
            if section == "train" and key in LOOP_FIELDS:
                continue
            if section == "model" and key in DIM_FIELDS and value == 0:
                continue
            if value != s[section][key]:
                diffs.append(f"{section}.{key}: run has {s[section][key]!r}, given {value!r}")
    if diffs:
        raise TrajplanError(
            f"cannot resume {run_dir}: config differs from the run's ({'; '.join(diffs[:3])})"
        )
    merged = dataclasses.replace(saved, plan=dataclasses.replace(given.plan))
    merged.train = dataclasses.replace(
        saved.train, **{k: getattr(given.train, k) for k in LOOP_FIELDS}
    )
    return merged


def _check_same_data(
    saved: dict[str, Any] | None,
    fingerprint: str,
    episodes: Any,
    allow_change: bool,
    run_dir: str | Path | None,
) -> None:
    """A resumed run must see the data it was trained on (unless allow_change)."""
    if saved is None or allow_change or saved.get("data_fingerprint") in (None, fingerprint):
        return
    then = (saved.get("n_episodes"), saved.get("n_transitions"))
    now = (episodes.n_episodes, episodes.n_steps)
    size = (
        "same size, other contents"
        if then == now
        else f"{then[0]} episodes / {then[1]} steps then, {now[0]} / {now[1]} now"
    )
    raise TrajplanError(
        f"cannot resume {run_dir}: dataset {episodes.dataset_id} changed since the run began "
        f"({size}): pass --allow-data-change to continue on the new data with the run's "
        "bins, or train a new run"
    )


def default_run_dir(env: str | None, dataset: str, runs_root: str | Path = "runs") -> Path:
    """runs/<env>-<level>-<YYYYmmdd-HHMMSS>."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{env or 'run'}-{dataset_level(dataset)}-{stamp}"
    return Path(runs_root) / name.replace("/", "_")


def open_run_dir(out_dir: str | Path | None, resume: bool, main: bool) -> DirLock | None:
    """Check --out for a new run (absent, empty or a dead end) or a resume, by every
    training's rules (`trajplan.runs.lifecycle`); rank 0 locks it so that a second training into
    it fails at once. None: no --out yet (a default directory, locked once named) or not
    rank 0."""
    if resume and out_dir is None:
        raise TrajplanError("--resume needs the run directory (--out DIR)")
    if out_dir is None:
        return None
    if not main:
        lifecycle.check_out(Path(out_dir), resume, STARTUP_FILES, resumable=True)
        return None
    return lifecycle.open_run_dir(Path(out_dir), resume, STARTUP_FILES, resumable=True)


@dataclass
class PreparedRun:
    """What `prepare_run` decided: the full config, where the run lives, its data, the
    manifest fields of config.json, and the state to continue from (None: a new run)."""

    cfg: RunConfig
    run_dir: Path
    data: Any
    manifest: dict[str, Any]
    state: dict[str, Any] | None


def prepare_run(
    cfg: RunConfig,
    out_dir: str | Path | None,
    resume: bool,
    dev: torch.device,
    data: Any,
    download: bool,
    runs_root: str | Path,
    rk: DistInfo,
    allow_data_change: bool,
) -> PreparedRun:
    """Check the config against the data and an old run, load and tokenize the data, and
    describe the run (its directory, manifest and, when resuming, the state to restore)."""
    state, saved_doc, bins = None, None, None
    if resume and _dead_start(out_dir, cfg):  # killed before it wrote its config
        resume = False  # nothing to continue: start it with the config given
    if resume:
        saved, saved_doc = read_manifest(out_dir)  # type: ignore[arg-type]
        cfg = resume_config(saved, cfg, Path(out_dir))  # type: ignore[arg-type]
        if has_checkpoint(out_dir):  # type: ignore[arg-type]
            state = load_train_state(out_dir)  # type: ignore[arg-type]
            bins = Path(out_dir) / DISCRETIZER_FILE  # type: ignore[arg-type]
        # else: stopped before its first checkpoint: start over with its config

    if data is not None and cfg.dataset is None:
        cfg.dataset = data.episodes.dataset_id
    env_name, dataset_id, obs_keep = resolve_dataset(cfg)
    if data is None:  # every rank prepares the same windows (deterministic)
        episodes = load_episodes(dataset_id, download=download, obs_keep=obs_keep)
        fingerprint = data_fingerprint(episodes)
        _check_same_data(saved_doc, fingerprint, episodes, allow_data_change, out_dir)
        # a resumed run keeps its own bins, so its tokens keep their meaning
        disc = Discretizer.load(bins) if bins is not None and bins.is_file() else None
        data = prepare_episodes(episodes, cfg.data, discretizer=disc)
    else:
        fingerprint = data_fingerprint(data.episodes)
        _check_same_data(saved_doc, fingerprint, data.episodes, allow_data_change, out_dir)
    episodes = data.episodes
    if env_name is None and episodes.env_id:
        info = env_for_dataset(episodes.env_id)
        env_name = info.name if info else episodes.env_id
        _check_env_known(env_name, dataset_id)
    _check_env_matches(env_name, episodes.env_id, dataset_id)
    cfg.env, cfg.dataset = env_name, dataset_id
    fill_model_dims(cfg, data.obs_dim, data.act_dim, dataset_id)
    check_memory(cfg, dev, rk.world)
    warning = merge_warning(data.columns, cfg.data.exact_bins)
    if warning and rk.main:
        print(warning, file=sys.stderr, flush=True)
    w = data.windows
    if (w.block_size, w.transition_dim) != (cfg.model.block_size, cfg.model.transition_dim):
        raise TrajplanError(
            f"prepared windows ({w.block_size} tokens, {w.transition_dim} dims) do not "
            f"match the model ({cfg.model.block_size}, {cfg.model.transition_dim})"
        )

    if out_dir is None:
        run_dir = default_run_dir(env_name, dataset_id, runs_root)
        if rk.world > 1:  # every rank must use rank 0's timestamp
            box = [str(run_dir)]
            dist.broadcast_object_list(box, src=0)
            run_dir = Path(box[0])
    else:
        run_dir = Path(out_dir)
    manifest = _data_manifest(env_name, dataset_id, data, fingerprint)
    return PreparedRun(cfg, run_dir, data, manifest, state)


def _data_manifest(env: str | None, dataset_id: str, data: Any, fingerprint: str) -> dict:
    """What config.json records of the run's env and data."""
    ep = data.episodes
    return {
        "env": env,
        "env_id": ep.env_id,
        "dataset_id": dataset_id,
        "ref_min": ep.ref_min,
        "ref_max": ep.ref_max,
        "ref_source": ep.ref_source,
        "n_windows": data.windows.n_windows,
        "n_transitions": int(ep.n_steps),
        "n_episodes": int(ep.n_episodes),
        "data_fingerprint": fingerprint,
        "columns": {  # how the bins keep each column: distinct values, tokens, errors
            c.name: [c.distinct, c.tokens, round(c.max_error, 6), round(c.mean_error, 6)]
            for c in data.columns
        },
        "created": now_iso(),
    }


def _dead_start(out_dir: str | Path | None, cfg: RunConfig) -> bool:
    """True when --resume meets a run directory that a training left while starting, before
    it wrote config.json (only `.lock` inside, say): it starts afresh with the config given,
    which must then name its data (`--seeds --resume` passes the seeds' config)."""
    if out_dir is None or not is_dead_end(out_dir) or (Path(out_dir) / CONFIG_FILE).is_file():
        return False
    if cfg.env is None and cfg.dataset is None:
        raise TrajplanError(
            f"{out_dir} holds no run yet (a training stopped while starting): train into it "
            "again without --resume, with --config, --env or --dataset"
        )
    return True


def _check_env_known(env_name: str, dataset: str) -> None:
    """The env a dataset was recorded in must exist here, or the run could never be
    evaluated: fail now, not after training."""

    try:
        resolve_env(env_name)
    except TrajplanError:
        raise TrajplanError(
            f"dataset {dataset} was recorded in env {env_name!r}, which is not installed here: "
            "install it, or give --env NAME for the env to plan in"
        ) from None


def _check_env_matches(env_name: str | None, dataset_env: str | None, dataset: str) -> None:
    """The configured env and the env the dataset was recorded in must agree (any version)."""

    if env_name is None or dataset_env is None:
        return
    try:  # an env this machine does not know is refused elsewhere, with its own message
        resolve_env(env_name), resolve_env(dataset_env)
    except TrajplanError:
        return
    if not same_env(env_name, dataset_env, any_version=True):
        raise TrajplanError(
            f"dataset {dataset} was recorded in {dataset_env}, not {env_name}: "
            "pick a dataset for this env or another --env"
        )
