"""The ensemble's run format (the baseline of long-horizon prediction, `trajplan.prediction`):
the networks a run directory holds, loading one, and the ensemble as a rollout `Predictor`.

    RUN/config.json              format trajplan-ensemble/1: env, dataset, the held-out split,
                                 losses, the config
    RUN/ensemble.safetensors     the stacked weights and the normaliser
    RUN/metrics.jsonl            {"kind": "ensemble", "step", "loss", "val_mse"} lines

    EnsembleConfig     sizes and schedule (a run's config)
    EnsembleNet        the stacked members: forward(x [N, B, in]) -> mean, log-variance
    Normaliser         input and target standardisation (training steps' mean and std)
    EnsembleRun        a loaded run directory (`load_ensemble`, `is_ensemble_run`)
    EnsemblePredictor  sampled rollouts, a `trajplan.prediction.open_loop.Predictor`

Training and writing a run: `trajplan.prediction.ensemble`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trajplan.data.episodes import SPLIT_SEED
from trajplan.errors import TrajplanError
from trajplan.runtime import atomic_write, read_tagged_safetensors

ENSEMBLE_FORMAT = "trajplan-ensemble/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "ensemble.safetensors"
METRICS_FILE = "metrics.jsonl"
NORM_KEYS = ("in_mean", "in_std", "out_mean", "out_std")


@dataclass
class EnsembleConfig:
    """A PETS-style ensemble: members, hidden sizes, Adam schedule, the held-out split."""

    members: int = 5
    hidden: list[int] = field(default_factory=lambda: [200, 200, 200])
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 256
    steps: int = 10_000
    val_fraction: float = 0.05  # episodes held out as TT's data.val_fraction (split seed 0)
    seed: int = 0
    log_every: int = 500

    def check(self) -> None:
        for name in ("members", "batch_size", "steps", "log_every"):
            if getattr(self, name) < 1:
                raise TrajplanError(
                    f"ensemble {name} must be at least 1, got {getattr(self, name)}"
                )
        if not self.hidden or min(self.hidden) < 1:
            raise TrajplanError(f"ensemble hidden sizes must be positive, got {self.hidden}")
        if not (np.isfinite(self.lr) and self.lr > 0) or self.weight_decay < 0:
            raise TrajplanError(f"ensemble lr must be > 0 and weight_decay >= 0, got {self.lr}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise TrajplanError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


class EnsembleNet(nn.Module):
    """N MLPs in stacked weights; outputs mean and bounded log-variance of `out_dim` values."""

    def __init__(self, members: int, in_dim: int, hidden: list[int], out_dim: int) -> None:
        super().__init__()
        sizes = [in_dim, *hidden, 2 * out_dim]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(members, i, o) / np.sqrt(i))
            for i, o in zip(sizes, sizes[1:], strict=False)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(members, 1, o)) for o in sizes[1:])
        self.max_logvar = nn.Parameter(torch.full((out_dim,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((out_dim,), -10.0))
        self.members, self.out_dim = members, out_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, B, in] -> mean [N, B, out], log-variance [N, B, out] (soft-bounded)."""
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)
            if i < len(self.weights) - 1:
                x = F.silu(x)
        mean, logvar = x.split(self.out_dim, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar


@dataclass
class Normaliser:
    """Standardisation of inputs (s, a) and targets (s' - s, r); float32 arrays."""

    in_mean: np.ndarray  # [o + a]
    in_std: np.ndarray
    out_mean: np.ndarray  # [o + 1]
    out_std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> Normaliser:
        def stats(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            v = v.astype(np.float64)
            return v.mean(0).astype(np.float32), (v.std(0) + 1e-6).astype(np.float32)

        return cls(*stats(x), *stats(y))

    def inputs(self, s: np.ndarray, a: np.ndarray) -> torch.Tensor:
        x = np.concatenate([s, a], axis=-1)
        return torch.as_tensor((x - self.in_mean) / self.in_std, dtype=torch.float32)

    def targets(self, s: np.ndarray, s_next: np.ndarray, r: np.ndarray) -> torch.Tensor:
        y = np.concatenate([s_next - s, r[:, None]], axis=-1)
        return torch.as_tensor((y - self.out_mean) / self.out_std, dtype=torch.float32)


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
    """True when path is a directory written by `trajplan.prediction.ensemble.train_ensemble`."""
    cfg = Path(path) / CONFIG_FILE
    try:
        return cfg.is_file() and json.loads(cfg.read_text()).get("format") == ENSEMBLE_FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def save_weights(path: Path, net: EnsembleNet, norm: Normaliser) -> None:
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
