"""The baseline of long-horizon prediction: a PETS-style probabilistic ensemble (Chua et al.
2018), one step at a time (docs/method.md, Long-horizon prediction).

N members, each an MLP (SiLU) from the normalised (s, a) to the mean and log-variance of the
normalised (s' - s, r). The log-variance is bounded softly between two learned limits (PETS),
and every member trains with the Gaussian negative log-likelihood on batches of its own
bootstrap resample of the training steps. All members live in stacked weights [N, in, out],
so one batched matmul runs the whole ensemble.

    EnsembleConfig   sizes and schedule
    EnsembleNet      the stacked members: forward(x [N, B, in]) -> mean, log-variance
    Normaliser       input and target standardisation (training steps' mean and std)
    fit_ensemble     train on the one-step pairs of some episodes; metrics lines
    one_step_mse     the ensemble mean's one-step error on held-out pairs (units of data std)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trajplan.data.episodes import Episodes
from trajplan.errors import TrajplanError
from trajplan.minibatch import Counters, Lines, run_steps
from trajplan.prediction.heldout import one_step_pairs


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


def pairs_xy(ep: Episodes) -> tuple[np.ndarray, np.ndarray]:
    """Raw inputs [n, o + a] and targets [n, o + 1] of the episodes' one-step pairs."""
    s, a, s_next, r = one_step_pairs(ep)
    if s.shape[0] == 0:
        raise TrajplanError(f"dataset {ep.dataset_id!r}: no step with a recorded next state")
    return np.concatenate([s, a], 1), np.concatenate([s_next - s, r[:, None]], 1)


def one_step_mse(
    net: EnsembleNet, norm: Normaliser, ep: Episodes, scale: np.ndarray | None = None
) -> float:
    """Mean squared error of the members' average predicted next state on the episodes'
    one-step pairs, in units of `scale` (default: the training states' std)."""
    s, a, s_next, _ = one_step_pairs(ep)
    o = s.shape[1]
    scale = norm.in_std[:o] if scale is None else scale
    with torch.no_grad():
        x = norm.inputs(s, a)[None].expand(net.members, -1, -1)
        mean, _ = net(x)
    delta = mean.mean(0).numpy()[:, :o] * norm.out_std[:o] + norm.out_mean[:o]
    return float((((s + delta - s_next) / scale) ** 2).mean())


@dataclass
class Fitted:
    """A trained ensemble and its record."""

    net: EnsembleNet
    norm: Normaliser
    lines: list[str]  # metrics.jsonl
    last_loss: float
    val_mse: float | None


def fit_ensemble(
    train: Episodes,
    val: Episodes | None,
    cfg: EnsembleConfig,
    progress: bool = True,
    label: str = "ensemble",
) -> Fitted:
    """Train on the one-step pairs of `train` (each member on its own bootstrap resample),
    logging the loss and the one-step error on `val` every log_every steps
    (`trajplan.minibatch.run_steps`). Seeded by cfg.seed."""
    cfg.check()
    x_raw, y_raw = pairs_xy(train)
    norm = Normaliser.fit(x_raw, y_raw)
    x = torch.as_tensor((x_raw - norm.in_mean) / norm.in_std, dtype=torch.float32)  # [n, in]
    y = torch.as_tensor((y_raw - norm.out_mean) / norm.out_std, dtype=torch.float32)  # [n, out]
    torch.manual_seed(cfg.seed)
    net = EnsembleNet(cfg.members, x.shape[1], cfg.hidden, y.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, N = x.shape[0], cfg.members
    boot = torch.randint(0, n, (N, n), generator=gen)  # [N, n] each member's resample

    def update() -> torch.Tensor:
        pos = torch.randint(0, n, (N, cfg.batch_size), generator=gen)
        idx = boot.gather(1, pos)  # [N, B]
        mean, logvar = net(x[idx])  # [N, B, out]
        nll = ((mean - y[idx]) ** 2 * torch.exp(-logvar) + logvar).mean()
        loss = nll + 0.01 * (net.max_logvar.sum() - net.min_logvar.sum())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return nll.detach()[None]  # [1]: the bounds' penalty is not logged

    def val_mse() -> dict[str, Any]:  # in every metrics line, with held-out episodes
        return {} if val is None else {"val_mse": one_step_mse(net, norm, val)}

    lines = Lines("ensemble", ("loss",), cfg.log_every, _shown, _diverged)
    c = run_steps(update, Counters.new(1), cfg.steps, lines, label, progress, extra=val_mse)
    last = c.last()
    return Fitted(net.eval(), norm, c.lines, last["loss"], last.get("val_mse"))


def _shown(row: dict[str, Any]) -> str:
    """A metrics line on the progress bar."""
    return f"nll {row['loss']:.3f}"


def _diverged(row: dict[str, Any]) -> TrajplanError:
    return TrajplanError(
        f"ensemble training diverged at step {row['step']} (loss {row['loss']}): lower --lr"
    )
