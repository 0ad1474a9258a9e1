"""Behaviour cloning: the baseline every TT score is compared with, on the same data.

`train_bc` fits a deterministic MLP policy (observation -> action, mean-squared error, a
tanh squash onto the action box) to a Minari dataset through the same loader as TT
(`trajplan.data.transitions.load_episodes`: Ant keeps its 27 dims, `a+b` ids combine datasets), and
writes a run directory that `trajplan eval` evaluates like a TT run:

    RUN/config.json               format trajplan-bc/1: env, dataset, reference scores, config
    RUN/policy.actor.safetensors  the policy as an exported actor (numpy only to run it)
    RUN/metrics.jsonl             {"kind": "bc", "step", "loss", "val_loss"} lines

`train_bc` locks its new run directory (`trajplan.runs.lifecycle`) and runs three steps:
`_prepare` (held-out episodes, normalised observations, actions squashed into [-1, 1],
return weights), `_fit` (the Adam updates, looped and logged by `trajplan.training.minibatch`) and
`_write_run` (export and files). The observation normalisation is folded into the first
layer, so the saved policy is an ordinary `trajplan.model.actor.Actor`. The same seed gives the
same weights (CPU, same thread count).

Goal-conditioned BC (`goal_dims`, the baseline of goal-conditioned TT): in a goal env (a
maze) each step's own goal dims are replaced by its hindsight goal, relabelled by the rule
TT's windows use (`trajplan.data.hindsight.with_hindsight_goals`): the policy maps
(observation, goal) -> action and, at evaluation, reads the env's goal where it stands in
the env's observation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trajplan.baselines.training_data import training_data
from trajplan.config import DataConfig, check_data_config
from trajplan.data.hindsight import with_hindsight_goals
from trajplan.data.transitions import Episodes, make_transitions, split_episodes
from trajplan.data.weighting import action_weights
from trajplan.envs.registry import EnvInfo
from trajplan.errors import TrajplanError
from trajplan.guards import check_disk, check_memory, check_out_dir
from trajplan.model.actor import POLICY_FILE, Actor, save_actor
from trajplan.runs.lifecycle import all_or_nothing, open_run_dir
from trajplan.runs.policy import BC_FORMAT
from trajplan.runtime import atomic_write, write_json
from trajplan.training.minibatch import Counters, Lines, run_steps

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"


@dataclass
class BCConfig:
    """The BC baseline: a ReLU MLP trained with Adam on mean-squared action error."""

    hidden: list[int] = field(default_factory=lambda: [256, 256])
    lr: float = 1e-3
    batch_size: int = 256
    steps: int = 20_000
    weight_decay: float = 0.0
    val_fraction: float = 0.05  # episodes held out for the validation loss (0: none)
    # Return-weighted BC (0 = plain): each step's squared error weighted by exp(beta * z), z
    # its standardised return-to-go, as TT's `data.action_weighting` (trajplan.data.weighting).
    action_weighting: float = 0.0
    seed: int = 0
    log_every: int = 500
    # Goal-conditioned BC (none = plain): the goal dims ("0,1"), each step's goal its
    # episode's final state, as TT's data.goal_dims.
    goal_dims: str | None = None

    def check(self) -> None:
        if not self.hidden or min(self.hidden) < 1:
            raise TrajplanError(f"bc hidden sizes must be positive, got {self.hidden}")
        for name in ("batch_size", "steps", "log_every"):
            if getattr(self, name) < 1:
                raise TrajplanError(f"bc {name} must be at least 1, got {getattr(self, name)}")
        if not (np.isfinite(self.lr) and self.lr > 0) or self.weight_decay < 0:
            raise TrajplanError(f"bc lr must be > 0 and weight_decay >= 0, got {self.lr}")
        if not (np.isfinite(self.action_weighting) and self.action_weighting >= 0):
            raise TrajplanError(f"bc action_weighting must be >= 0, got {self.action_weighting}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise TrajplanError(f"bc val_fraction must be in [0, 1), got {self.val_fraction}")
        check_data_config(DataConfig(goal_dims=self.goal_dims))


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def export_actor(
    net: nn.Sequential, mean: np.ndarray, std: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Linear layers as numpy, with (obs - mean) / std folded into the first one."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    ws = [m.weight.detach().double().numpy() for m in linears]
    bs = [m.bias.detach().double().numpy() for m in linears]
    ws[0] = ws[0] / std[None, :]  # W (x - m) / s = (W / s) x - (W / s) m
    bs[0] = bs[0] - ws[0] @ mean
    return [w.astype(np.float32) for w in ws], [b.astype(np.float32) for b in bs]


def train_bc(
    dataset_id: str,
    out_dir: str | Path,
    cfg: BCConfig | None = None,
    env: str | None = None,
    progress: bool = True,
    episodes: Episodes | None = None,
) -> Path:
    """Train the BC baseline on a dataset and write its run directory (new, empty or a dead
    end: `trajplan.runs.lifecycle`, locked while it trains)."""
    cfg = cfg or BCConfig()
    cfg.check()
    out = Path(out_dir)
    check_out_dir(out)
    lock = open_run_dir(out)  # new, empty or a dead end (trajplan.runs.lifecycle)
    try:
        episodes, info, low, high = training_data(dataset_id, env, episodes)
        if cfg.goal_dims is not None:  # goal-conditioned: the goal dims hold hindsight goals
            episodes = with_hindsight_goals(episodes, cfg.goal_dims)
        _check_room(out, cfg, episodes, len(low))
        data = _prepare(episodes, low, high, cfg)
        t0 = time.perf_counter()
        fit = _fit(data, cfg, f"bc {dataset_id}", progress)
        with all_or_nothing(out, (POLICY_FILE, METRICS_FILE, CONFIG_FILE)):
            _write_run(out, fit, data, cfg, info, episodes, dataset_id, t0)
    finally:
        lock.release(remove_if_unused=True)
    return out


def _check_room(out: Path, cfg: BCConfig, episodes: Episodes, act_dim: int) -> None:
    """Refuse, before fitting, hidden sizes that cannot fit in memory and a run that cannot
    fit on disk (trajplan.guards)."""
    sizes = [episodes.observations.shape[-1], *cfg.hidden, act_dim]
    need = bc_bytes(sizes, cfg.batch_size, int(episodes.n_steps))
    check_memory(need, "cpu", f"bc with hidden sizes {cfg.hidden}", "--hidden")
    weights = 4 * sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
    check_disk(out, weights + 2**20, weights + 2**12, "the BC run")


@dataclass
class _Prepared:
    """A dataset ready to fit: normalised observations, actions squashed into [-1, 1]."""

    train_ep: Episodes
    val_ep: Episodes | None  # held-out episodes (cfg.val_fraction), or None
    mean: np.ndarray  # [o] observation mean of the training episodes
    std: np.ndarray  # [o] their std + 1e-3
    low: np.ndarray  # [a] the action box
    high: np.ndarray  # [a]
    x: torch.Tensor  # [n, o] (obs - mean) / std
    y: torch.Tensor  # [n, a] actions in [-1, 1]
    w: torch.Tensor  # [n] per-step loss weights, mean 1
    val: tuple[torch.Tensor, torch.Tensor] | None  # [m, o], [m, a] as x, y; or None


def _prepare(episodes: Episodes, low: np.ndarray, high: np.ndarray, cfg: BCConfig) -> _Prepared:
    """Split off the validation episodes, normalise, squash, weight (no torch RNG used)."""
    train_ep, val_ep = episodes, None
    if cfg.val_fraction > 0 and episodes.n_episodes >= 2:
        train_ep, val_ep = split_episodes(episodes, cfg.val_fraction, seed=cfg.seed)
    obs = train_ep.observations.astype(np.float64)
    mean, std = obs.mean(0), obs.std(0) + 1e-3

    def tensors(ep: Episodes) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor((ep.observations - mean) / std, dtype=torch.float32)
        a = np.clip(ep.actions.astype(np.float64), low, high)
        y = torch.as_tensor(2.0 * (a - low) / (high - low) - 1.0, dtype=torch.float32)
        return x, y  # [n, o], [n, a] in [-1, 1]

    x, y = tensors(train_ep)
    w = torch.ones(x.shape[0])  # [n]
    if cfg.action_weighting > 0:  # TT's default data rules: penalised rewards, its values
        data = DataConfig()
        rows = make_transitions(train_ep, data)
        w = torch.as_tensor(action_weights(rows, cfg.action_weighting, data.discount))
    val = tensors(val_ep) if val_ep is not None else None
    return _Prepared(train_ep, val_ep, mean, std, low, high, x, y, w, val)


@dataclass
class _Fit:
    """A fitted policy network and its record."""

    net: nn.Sequential  # normalised obs [., o] -> pre-tanh action [., a]
    lines: list[str]  # metrics.jsonl
    last_loss: float  # mean training loss since the previous log line
    val_loss: float | None


def _fit(d: _Prepared, cfg: BCConfig, label: str, progress: bool) -> _Fit:
    """Adam on the weighted squared error of tanh(net(x)) in
    `trajplan.training.minibatch.run_steps`, a metrics line every log_every steps; seeded by
    cfg.seed (weights and batches). A non-finite loss is a TrajplanError."""
    x, y, w = d.x, d.y, d.w
    torch.manual_seed(cfg.seed)
    net = _mlp([x.shape[1], *cfg.hidden, y.shape[1]])
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)

    def update() -> torch.Tensor:
        idx = torch.randint(0, x.shape[0], (cfg.batch_size,), generator=gen)  # [batch]
        err = ((torch.tanh(net(x[idx])) - y[idx]) ** 2).mean(1)  # [batch]
        loss = (w[idx] * err).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()[None]  # [1]

    def val_loss() -> dict[str, Any]:  # in every metrics line, with held-out episodes
        if d.val is None:
            return {}
        vx, vy = d.val
        with torch.no_grad():
            return {"val_loss": float(((torch.tanh(net(vx)) - vy) ** 2).mean())}

    lines = Lines("bc", ("loss",), cfg.log_every, lambda row: f"loss {row['loss']:.4f}", _diverged)
    c = run_steps(update, Counters.new(1), cfg.steps, lines, label, progress, extra=val_loss)
    last = c.last()
    return _Fit(net, c.lines, last["loss"], last.get("val_loss"))


def _diverged(row: dict[str, Any]) -> TrajplanError:
    return TrajplanError(
        f"BC training diverged at step {row['step']} (loss {row['loss']}): lower --lr"
    )


def _write_run(
    out: Path,
    fit: _Fit,
    d: _Prepared,
    cfg: BCConfig,
    info: EnvInfo,
    episodes: Episodes,
    dataset_id: str,
    t0: float,
) -> None:
    """The run directory: the exported actor, metrics.jsonl, then config.json (last; what
    `is_bc_run` looks for)."""
    ws, bs = export_actor(fit.net, d.mean, d.std, d.low, d.high)
    actor = Actor(
        ws,
        bs,
        "relu",
        d.low.astype(np.float32),
        d.high.astype(np.float32),
        meta={
            "env_id": info.gym_id,
            "algorithm_name": "gcbc" if cfg.goal_dims else "bc",
            "level": "bc",
            "action_weighting": cfg.action_weighting,
            "dataset_id": dataset_id,
            "training_steps": cfg.steps,
        },
    )
    out.mkdir(parents=True, exist_ok=True)
    save_actor(actor, out / POLICY_FILE)
    atomic_write(out / METRICS_FILE, lambda p: p.write_text("".join(fit.lines)))
    write_json(
        out / CONFIG_FILE,
        {
            "format": BC_FORMAT,
            "kind": "bc",
            "status": "finished",
            "env": info.name,
            "env_id": info.gym_id,
            "dataset_id": dataset_id,
            "ref_min": episodes.ref_min,
            "ref_max": episodes.ref_max,
            "ref_source": episodes.ref_source,
            "n_transitions": int(d.train_ep.n_steps),
            "n_val_transitions": int(d.val_ep.n_steps) if d.val_ep is not None else 0,
            "last_loss": fit.last_loss,
            "val_loss": fit.val_loss,
            "wall_s": round(time.perf_counter() - t0, 3),
            "config": asdict(cfg),
        },
    )


def bc_bytes(sizes: Sequence[int], batch: int, n_samples: int = 0) -> int:
    """Peak memory of fitting a BC MLP of layer sizes [obs, *hidden, act] with Adam: weights,
    gradients and two moments (float32), a batch's activations and their gradients, and the
    training set itself (n_samples rows of obs + act + weight)."""
    params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
    acts = batch * sum(sizes)
    return 4 * (4 * params + 3 * acts + n_samples * (sizes[0] + sizes[-1] + 1))
