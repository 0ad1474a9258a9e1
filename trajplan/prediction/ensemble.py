"""The baseline of long-horizon prediction: a PETS-style probabilistic ensemble (Chua et al.
2018), one step at a time (docs/method.md, Long-horizon prediction), trained into a run
directory (its format, networks and loading: `trajplan.runs.ensemble`).

N members, each an MLP (SiLU) from the normalised (s, a) to the mean and log-variance of the
normalised (s' - s, r). The log-variance is bounded softly between two learned limits (PETS),
and every member trains with the Gaussian negative log-likelihood on batches of its own
bootstrap resample of the training steps. All members live in stacked weights [N, in, out],
so one batched matmul runs the whole ensemble.

    fit_ensemble     train on the one-step pairs of some episodes; metrics lines
    one_step_mse     the ensemble mean's one-step error on held-out pairs (units of data std)
    train_ensemble   train on a dataset and write a run directory

The training episodes are the dataset's minus the held-out ones of TT's split (the same
`data.val_fraction` and split seed), so a TT run and an ensemble of the same fraction are
scored on episodes neither has seen.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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
    mlp_params,
)
from trajplan.prediction.heldout import SPLIT_SEED, one_step_pairs, split_held_out
from trajplan.runs.ensemble import (
    CONFIG_FILE,
    ENSEMBLE_FORMAT,
    METRICS_FILE,
    WEIGHTS_FILE,
    EnsembleConfig,
    EnsembleNet,
    Normaliser,
    save_weights,
)
from trajplan.runs.lifecycle import all_or_nothing, open_run_dir
from trajplan.runtime import atomic_write, write_json
from trajplan.training.minibatch import Counters, Lines, run_steps


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
    (`trajplan.training.minibatch.run_steps`). Seeded by cfg.seed."""
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


def train_ensemble(
    dataset_id: str,
    out_dir: str | Path,
    cfg: EnsembleConfig | None = None,
    env: str | None = None,
    progress: bool = True,
) -> Path:
    """Train the ensemble on a dataset's training episodes; write its run directory (new,
    empty or a dead end: `trajplan.runs.lifecycle`, locked while it trains). config.json is
    written last."""
    cfg = cfg or EnsembleConfig()
    cfg.check()
    out = Path(out_dir)
    check_out_dir(out)
    lock = open_run_dir(out)  # new, empty or a dead end (trajplan.runs.lifecycle)
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
        with all_or_nothing(out, (WEIGHTS_FILE, METRICS_FILE, CONFIG_FILE)):
            _write_run(out, fit, cfg, dataset_id, env_name, episodes, train, val, t0)
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
    save_weights(out / WEIGHTS_FILE, fit.net, fit.norm)
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


def ensemble_bytes(members: int, sizes: Sequence[int], batch: int, n_rows: int) -> int:
    """Peak memory of fitting a stacked ensemble of `members` MLPs of layer sizes `sizes`
    with Adam (float32): weights, gradients, moments, each member's bootstrap indices over
    `n_rows` rows (int64) and a batch's indices, inputs, activations and gradients."""
    params = members * mlp_params(sizes)
    acts = members * batch * sum(sizes)
    return 4 * (4 * params + 3 * acts) + 8 * members * (n_rows + 2 * batch)
