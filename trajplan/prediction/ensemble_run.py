"""Ensemble runs: train one into a directory, load it, roll it out as a `rollout.Predictor`.

    RUN/config.json              format trajplan-ensemble/1: env, dataset, the held-out split,
                                 losses, the config
    RUN/ensemble.safetensors     the stacked weights and the normaliser
    RUN/metrics.jsonl            {"kind": "ensemble", "step", "loss", "val_mse"} lines

The training episodes are the dataset's minus the held-out ones of TT's split (the same
`data.val_fraction` and split seed), so a TT run and an ensemble of the same fraction are
scored on episodes neither has seen.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajplan.data.episodes import Episodes, load_episodes
from trajplan.envs.registry import env_for_dataset, resolve_env
from trajplan.errors import TrajplanError
from trajplan.guards import (
    MEMORY_SHARE,
    available_memory,
    check_disk,
    check_memory,
    check_out_dir,
    ensemble_bytes,
    mlp_params,
)
from trajplan.lifecycle import open_run_dir
from trajplan.prediction.ensemble import EnsembleConfig, EnsembleNet, Normaliser, fit_ensemble
from trajplan.prediction.heldout import SPLIT_SEED, split_held_out
from trajplan.runtime import atomic_write, read_tagged_safetensors, write_json

ENSEMBLE_FORMAT = "trajplan-ensemble/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "ensemble.safetensors"
METRICS_FILE = "metrics.jsonl"
NORM_KEYS = ("in_mean", "in_std", "out_mean", "out_std")


@dataclass
class EnsembleRun:
    """A loaded ensemble run directory."""

    run_dir: Path
    net: EnsembleNet
    norm: Normaliser
    env: str
    dataset_id: str
    val_fraction: float
    split_seed: int
    meta: dict[str, Any]

    def predictor(self) -> EnsemblePredictor:
        return EnsemblePredictor(self.net, self.norm)


def is_ensemble_run(path: str | Path) -> bool:
    """True when path is a directory written by `train_ensemble`."""
    cfg = Path(path) / CONFIG_FILE
    try:
        return cfg.is_file() and json.loads(cfg.read_text()).get("format") == ENSEMBLE_FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def train_ensemble(
    dataset_id: str,
    out_dir: str | Path,
    cfg: EnsembleConfig | None = None,
    env: str | None = None,
    progress: bool = True,
) -> Path:
    """Train the ensemble on a dataset's training episodes; write its run directory (new,
    empty or a dead end: `trajplan.lifecycle`, locked while it trains). config.json is
    written last."""
    cfg = cfg or EnsembleConfig()
    cfg.check()
    out = Path(out_dir)
    check_out_dir(out)
    lock = open_run_dir(out)  # new, empty or a dead end (trajplan.lifecycle)
    try:
        episodes = load_episodes(dataset_id)
        info = resolve_env(env) if env else env_for_dataset(dataset_id)
        env_name = info.name if info is not None else (episodes.env_id or "")
        train, val = episodes, None
        if cfg.val_fraction > 0:
            train, val = split_held_out(episodes, cfg.val_fraction)
        _check_room(out, cfg, train)
        t0 = time.perf_counter()
        fit = fit_ensemble(train, val, cfg, progress, f"ensemble {dataset_id}")
        try:
            _write_run(out, fit, cfg, dataset_id, env_name, episodes, train, val, t0)
        except BaseException:  # disk full, a signal: no half-written run directory
            for name in (WEIGHTS_FILE, METRICS_FILE, CONFIG_FILE):
                (out / name).unlink(missing_ok=True)
            raise
    finally:
        lock.release(remove_if_unused=True)
    return out


def _check_room(out: Path, cfg: EnsembleConfig, train: Episodes) -> None:
    """Refuse, before fitting, members, widths or batches that cannot fit in memory and
    weights that cannot fit on disk (trajplan.guards)."""
    o, a = train.obs_dim, train.act_dim
    sizes = [o + a, *cfg.hidden, 2 * (o + 1)]
    n = int(train.n_steps)
    need = ensemble_bytes(cfg.members, sizes, cfg.batch_size, n) + 8 * n * (2 * o + a + 1)
    parts = {
        "--hidden": ensemble_bytes(cfg.members, sizes, 0, 0),
        "--batch-size": ensemble_bytes(cfg.members, sizes, cfg.batch_size, 0),
    }
    parts["--batch-size"] -= parts["--hidden"]
    lower = max(parts, key=lambda k: parts[k])
    have = available_memory("cpu")
    one = ensemble_bytes(1, sizes, cfg.batch_size, n) + 8 * n * (2 * o + a + 1)
    if cfg.members > 1 and have is not None and one <= MEMORY_SHARE * have:
        lower = "--members"  # one member fits: their number is what does not
    what = (f"an ensemble of {cfg.members} members with hidden sizes {cfg.hidden} and batch "
            f"size {cfg.batch_size:,}")  # fmt: skip
    check_memory(need, "cpu", what, lower)
    weights = 4 * cfg.members * mlp_params(sizes) + 2**12
    check_disk(out, weights + 2**20, weights, "the ensemble run")


def _write_run(
    out: Path,
    fit: Any,
    cfg: EnsembleConfig,
    dataset_id: str,
    env_name: str,
    episodes: Episodes,
    train: Episodes,
    val: Episodes | None,
    t0: float,
) -> None:
    """The run's weights, metrics.jsonl, then config.json (last)."""
    out.mkdir(parents=True, exist_ok=True)
    _save_weights(out / WEIGHTS_FILE, fit.net, fit.norm)
    atomic_write(out / METRICS_FILE, lambda p: p.write_text("".join(fit.lines)))
    write_json(
        out / CONFIG_FILE,
        {
            "format": ENSEMBLE_FORMAT,
            "kind": "ensemble",
            "status": "finished",
            "env": env_name,
            "env_id": episodes.env_id,
            "dataset_id": dataset_id,
            "val_fraction": cfg.val_fraction,
            "split_seed": SPLIT_SEED,
            "obs_dim": episodes.obs_dim,
            "act_dim": episodes.act_dim,
            "n_train_episodes": train.n_episodes,
            "n_val_episodes": val.n_episodes if val is not None else 0,
            "last_loss": fit.last_loss,
            "val_mse": fit.val_mse,
            "wall_s": round(time.perf_counter() - t0, 3),
            "config": asdict(cfg),
        },
    )


def _save_weights(path: Path, net: EnsembleNet, norm: Normaliser) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    for key in NORM_KEYS:
        tensors[f"norm.{key}"] = torch.as_tensor(getattr(norm, key))
    meta = {"members": net.members, "out_dim": net.out_dim}
    header = {"format": ENSEMBLE_FORMAT, "meta": json.dumps(meta)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def load_ensemble(run_dir: str | Path) -> EnsembleRun:
    """Read an ensemble run directory; anything else is a one-line TrajplanError."""
    run_dir = Path(run_dir)
    if not is_ensemble_run(run_dir):
        raise TrajplanError(
            f"{run_dir} is not a trajplan ensemble run (train one: trajplan ensemble)"
        )
    doc = json.loads((run_dir / CONFIG_FILE).read_text())
    _, t = read_tagged_safetensors(run_dir / WEIGHTS_FILE, ENSEMBLE_FORMAT, "ensemble", "pt")
    try:
        cfg = EnsembleConfig(**doc["config"])
        in_dim, out_dim = int(doc["obs_dim"]) + int(doc["act_dim"]), int(doc["obs_dim"]) + 1
        net = EnsembleNet(cfg.members, in_dim, cfg.hidden, out_dim)
        net.load_state_dict({k: v for k, v in t.items() if not k.startswith("norm.")})
        norm = Normaliser(*(t[f"norm.{k}"].numpy() for k in NORM_KEYS))
    except (KeyError, TypeError, RuntimeError) as exc:
        raise TrajplanError(f"{run_dir}: damaged ensemble run ({str(exc)[:120]})") from None
    return EnsembleRun(
        run_dir=run_dir,
        net=net.eval(),
        norm=norm,
        env=str(doc.get("env") or ""),
        dataset_id=str(doc.get("dataset_id") or ""),
        val_fraction=float(doc.get("val_fraction", 0.0)),
        split_seed=int(doc.get("split_seed", SPLIT_SEED)),
        meta=doc,
    )


class EnsemblePredictor:
    """Sampled rollouts (PETS's TS-1): every row picks a member at random at every step and
    draws its next state and reward from that member's Gaussian."""

    name = "ensemble"

    def __init__(self, net: EnsembleNet, norm: Normaliser) -> None:
        self.net, self.norm = net, norm

    def begin(self, obs: np.ndarray, samples: int, horizon: int, seed: int) -> None:
        self.state = np.repeat(np.asarray(obs, dtype=np.float64), samples, axis=0)  # [R, o]
        self.gen = torch.Generator().manual_seed(seed)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        R, o = self.state.shape
        x = self.norm.inputs(self.state, np.asarray(actions, dtype=np.float64))  # [R, in]
        with torch.no_grad():
            mean, logvar = self.net(x[None].expand(self.net.members, -1, -1))  # [N, R, out]
        pick = torch.randint(0, self.net.members, (R,), generator=self.gen)  # [R]
        rows = torch.arange(R)
        mu, lv = mean[pick, rows], logvar[pick, rows]  # [R, out]
        eps = torch.randn(mu.shape, generator=self.gen)
        y = (mu + torch.exp(0.5 * lv) * eps).double().numpy() * self.norm.out_std
        y = y + self.norm.out_mean  # [R, o + 1] raw (s' - s, r)
        self.state = self.state + y[:, :o]
        return self.state.copy(), y[:, o]
