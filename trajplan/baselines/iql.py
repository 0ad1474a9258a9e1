"""Implicit Q-Learning (IQL; Kostrikov, Nair, Levine 2021, "Offline Reinforcement Learning with
Implicit Q-Learning"): an offline-RL baseline next to TT and BC, and the critic of TT + Q
(`plan.critic`).

Written for trajplan after the paper and the authors' JAX code (ikostrikov/implicit_q_learning,
read, not copied). d3rlpy cannot be used: its 2.8.1 pins gymnasium==1.0.0 and imports gym,
which this stack (Gymnasium 1.x, MuJoCo 3, Minari) cannot take.

    iql_preset(env)  the settings of the env's domain (below)
    train_iql        a Minari dataset through the loader BC and TT use
                     (`trajplan.data.transitions.load_episodes`) -> a run directory
                     (`trajplan.baselines.iql_run`: the mean actor, the critic, metrics)
    load_iql         the run (`IQLRun`, a `trajplan.runs.Run`), its critic (`Critic`)

The algorithm (`trajplan.baselines.iql_nets`): V by expectile regression of min target Q - V;
twin Q by TD to r + gamma (1 - terminated) V(s'), targets Polyak-averaged (0.005); the actor
by advantage-weighted regression (weights exp(beta (Q - V)), clipped at 100) of a Gaussian
with mean tanh(mu(s)) and a state-independent std; Adam 3e-4 for all three, the actor's
decayed to 0 by a cosine; batch 256, two hidden layers of 256, 1M steps; gamma 0.99.

Presets by domain (`iql_preset`, from the env's name):
  locomotion  expectile 0.7, temperature 3, rewards x 1000 / (max - min episode return):
              the paper's (MuJoCo HalfCheetah, Hopper, Walker2d, Ant; any other env too)
  antmaze     expectile 0.9, temperature 10, rewards - 1: the paper's
  pointmaze   (D4RL's maze2d, sparse reward) expectile 0.9, temperature 10, rewards as they
              are. Not in the paper; AntMaze's because the task is of its kind: a sparse
              goal reward, long horizons, and data from a controller driving to goals
              other than the evaluated one, so the policy must stitch pieces of
              trajectories, which an upper expectile near the max over the data's actions
              (0.9) and sharp weights (10) do. The rewards stay 0/1: nothing terminates
              (the data's cuts at goals are truncations, the evaluated task continues), so
              AntMaze's -1 would shift every value by the same -1 / (1 - gamma) and change
              no ranking; the locomotion rescaling is for dense returns, not for counts of
              steps at the goal.

Data: transitions (s, a, r, s') within episodes, every step of every episode; the TD mask
is 1 - terminated (a truncation bootstraps: a time limit, or a maze's goal where the data
cuts its stream, with the goal's reward on that very step). An episode's last step
bootstraps from the observation after it (`Episodes.final_observations`); where that is not
known (episodes built by hand) a truncated last step is left out. Two choices beyond the
authors' code: observations are normalised by the data's mean and std (kept in the critic
file, folded into the exported actor's first layer), and actions are mapped from the env's
box to [-1, 1] as BC maps them (the identity for the MuJoCo envs, whose box is [-1, 1]).
The same seed gives the same weights (CPU, same thread count).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajplan.actors import POLICY_FILE, Actor, save_actor
from trajplan.baselines.bc import export_actor
from trajplan.baselines.iql_nets import STATS, Batch, Hyper, IQLLearner, IQLNets
from trajplan.baselines.iql_run import (
    CONFIG_FILE,
    CRITIC_FILE,
    IQL_FORMAT,
    METRICS_FILE,
    Critic,
    IQLRun,
    is_iql_run,
    load_critic,
    load_iql,
    save_critic,
)
from trajplan.baselines.policy_run import env_of, training_data
from trajplan.config import from_dict
from trajplan.data.store import env_id_of, open_dataset, split_dataset_ids
from trajplan.data.transitions import Episodes
from trajplan.envs.registry import EnvInfo
from trajplan.errors import TrajplanError
from trajplan.progress import Progress
from trajplan.runtime import atomic_write, resolve_device, write_json

__all__ = [
    "IQL_FORMAT",
    "Critic",
    "IQLConfig",
    "IQLRun",
    "dataset_env",
    "iql_domain",
    "iql_preset",
    "is_iql_run",
    "load_critic",
    "load_iql",
    "train_iql",
]


@dataclass
class IQLConfig:
    """IQL's settings; the defaults are the paper's for locomotion (`iql_preset` per domain)."""

    expectile: float = 0.7  # tau: V fits this expectile of Q (0.5 the mean, towards 1 the max)
    temperature: float = 3.0  # beta of the actor's weights exp(beta (Q - V)); 0: plain BC
    normalize_rewards: bool = True  # rewards x 1000 / (max - min episode return)
    reward_offset: float = 0.0  # added to every reward after that (AntMaze: -1)
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    lr: float = 3e-4  # Adam, Q, V and the actor
    actor_cosine: bool = True  # the actor's learning rate decays to 0 by a cosine
    batch_size: int = 256
    steps: int = 1_000_000
    discount: float = 0.99
    polyak: float = 0.005  # target Q += polyak * (Q - target Q) after every step
    max_weight: float = 100.0  # the actor's weights are clipped here
    seed: int = 0
    log_every: int = 1000  # a metrics.jsonl line (means since the last one) every this many

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IQLConfig:
        """From a dict (a run's config.json "config"): unknown keys, wrong types or values
        are one-line errors."""
        cfg = from_dict(cls, data, "iql")
        cfg.check()
        return cfg

    def check(self) -> None:
        from_dict(type(self), asdict(self), "iql")  # types: a one-line error each
        if not self.hidden or not all(isinstance(h, int) and h >= 1 for h in self.hidden):
            raise TrajplanError(f"iql hidden sizes must be positive integers, got {self.hidden}")
        for name in ("batch_size", "steps", "log_every"):
            if getattr(self, name) < 1:
                raise TrajplanError(f"iql {name} must be at least 1, got {getattr(self, name)}")
        rules = (
            ("expectile", 0.0 < self.expectile < 1.0, "in (0, 1)"),
            ("temperature", 0.0 <= self.temperature < np.inf, ">= 0"),
            ("lr", 0.0 < self.lr < np.inf, "> 0"),
            ("discount", 0.0 <= self.discount < 1.0, "in [0, 1)"),
            ("polyak", 0.0 < self.polyak <= 1.0, "in (0, 1]"),
            ("max_weight", 0.0 < self.max_weight < np.inf, "> 0"),
            ("reward_offset", bool(np.isfinite(self.reward_offset)), "finite"),
        )
        for name, ok, what in rules:
            if not ok:
                raise TrajplanError(f"iql {name} must be {what}, got {getattr(self, name)}")


PRESETS: dict[str, dict[str, Any]] = {
    "locomotion": {"expectile": 0.7, "temperature": 3.0, "normalize_rewards": True},
    "antmaze": {"expectile": 0.9, "temperature": 10.0, "normalize_rewards": False,
                "reward_offset": -1.0},
    "pointmaze": {"expectile": 0.9, "temperature": 10.0, "normalize_rewards": False},
}  # fmt: skip


def iql_domain(env_name: str) -> str:
    """'antmaze', 'pointmaze' (also D4RL's maze2d) or 'locomotion' (any other env)."""
    name = env_name.lower().replace("_", "").replace("-", "")
    if "antmaze" in name:
        return "antmaze"
    if "pointmaze" in name or "maze2d" in name:
        return "pointmaze"
    return "locomotion"


def iql_preset(env_name: str) -> IQLConfig:
    """The settings of the env's domain (module docstring), all else the defaults."""
    return IQLConfig(**PRESETS[iql_domain(env_name)])


def dataset_env(dataset_id: str, env: str | None = None) -> EnvInfo:
    """The env a run on this dataset acts in: `env`, else the one the dataset was recorded
    in, else its id's env name. Reads metadata only; a missing dataset is a one-line error."""
    recorded = None if env else env_id_of(open_dataset(split_dataset_ids(dataset_id)[0]))
    return env_of(env, recorded, dataset_id)


def train_iql(
    dataset_id: str,
    out_dir: str | Path,
    cfg: IQLConfig | None = None,
    progress: bool = True,
    *,
    env: str | None = None,
    episodes: Episodes | None = None,
    device: str = "cpu",
) -> Path:
    """Train IQL on a dataset and write its run directory (which must not exist).

    cfg None: the preset of the env's domain; env: the env to act in (default: the
    dataset's); episodes: use these instead of reading the dataset (tests)."""
    if cfg is not None:
        cfg.check()
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrajplanError(f"run directory {out} already exists: choose another --out")
    dev = resolve_device(device)
    episodes, info, low, high = training_data(dataset_id, env, episodes)
    cfg = cfg or iql_preset(info.gym_id)
    cfg.check()
    data = _prepare(episodes, low, high, cfg)
    t0 = time.perf_counter()
    nets, lines = _fit(data, cfg, f"iql {dataset_id}", progress, dev, t0)
    fit_s = time.perf_counter() - t0
    _write_run(out, nets, lines, data, cfg, info, episodes, dataset_id, fit_s)
    return out


@dataclass
class _Data:
    """Transitions ready to sample (CPU): every step's row, and which rows are usable."""

    obs: torch.Tensor  # [n (+ n_episodes), o] normalised observations of every step (then
    # of every episode's end, when known)
    act: torch.Tensor  # [n, a] actions in [-1, 1]
    rew: torch.Tensor  # [n] rewards x reward_scale + offset
    mask: torch.Tensor  # [n] 1 - terminated
    nxt: torch.Tensor  # [n] int64 row of obs after each step (unknown: its own, unused)
    rows: torch.Tensor  # [m] int64 the steps to sample: a next observation, or terminated
    mean: np.ndarray  # [o] float64 observation mean
    std: np.ndarray  # [o] its std + 1e-3
    low: np.ndarray  # [a] the action box
    high: np.ndarray  # [a]
    reward_scale: float


def _prepare(episodes: Episodes, low: np.ndarray, high: np.ndarray, cfg: IQLConfig) -> _Data:
    """Normalise, squash, scale, and link each step to the observation after it: the next
    step's, or after an episode's last step its final observation (row n + episode)."""
    n, lengths = episodes.n_steps, episodes.lengths
    last = np.zeros(n, dtype=bool)
    last[episodes.starts + lengths - 1] = True  # [n] an episode's last step
    term = episodes.terminations.astype(bool)
    obs = episodes.observations.astype(np.float64)
    nxt = np.arange(n) + ~last  # [n] the next step, or itself at a last step
    final = episodes.final_observations
    if final is not None:  # [n_episodes, o] after the observations, as rows n + episode
        obs = np.concatenate([obs, final.astype(np.float64)])
        nxt[last] = n + np.arange(lengths.size)
    rows = np.flatnonzero(~last | term | (final is not None))
    if rows.size == 0:
        raise TrajplanError(
            f"dataset {episodes.dataset_id!r} has no transitions with a next observation "
            "(every episode is one truncated step)"
        )
    scale = 1.0
    if cfg.normalize_rewards:
        returns = episodes.returns()  # [n_episodes]
        span = float(returns.max() - returns.min())
        scale = 1000.0 / span if span > 0 else 1.0  # one return: nothing to scale by
    mean, std = obs[:n].mean(0), obs[:n].std(0) + 1e-3
    a = np.clip(episodes.actions.astype(np.float64), low, high)
    rew = episodes.rewards.astype(np.float64) * scale + cfg.reward_offset
    return _Data(
        obs=torch.as_tensor((obs - mean) / std, dtype=torch.float32),
        act=torch.as_tensor(2.0 * (a - low) / (high - low) - 1.0, dtype=torch.float32),
        rew=torch.as_tensor(rew, dtype=torch.float32),
        mask=torch.as_tensor(1.0 - term, dtype=torch.float32),
        nxt=torch.as_tensor(nxt, dtype=torch.int64),
        rows=torch.as_tensor(rows, dtype=torch.int64),
        mean=mean,
        std=std,
        low=low,
        high=high,
        reward_scale=scale,
    )


def _fit(
    d: _Data, cfg: IQLConfig, label: str, progress: bool, device: torch.device, t0: float
) -> tuple[IQLNets, list[str]]:
    """cfg.steps updates on uniform batches of the usable rows, a metrics line every
    log_every; seeded by cfg.seed (init and batches). A non-finite loss is a TrajplanError."""
    torch.manual_seed(cfg.seed)
    nets = IQLNets(d.obs.shape[1], d.act.shape[1], cfg.hidden).to(device)
    hp = Hyper(cfg.expectile, cfg.temperature, cfg.discount, cfg.polyak, cfg.max_weight,
               cfg.lr, cfg.actor_cosine, cfg.steps)  # fmt: skip
    learner = IQLLearner(nets, hp)
    gen = torch.Generator().manual_seed(cfg.seed)
    obs, act, rew, mask, nxt = (t.to(device) for t in (d.obs, d.act, d.rew, d.mask, d.nxt))
    lines: list[str] = []
    acc = torch.zeros(len(STATS), dtype=torch.float64, device=device)
    with Progress(label, cfg.steps, enabled=progress) as bar:
        for step in range(1, cfg.steps + 1):
            pick = d.rows[torch.randint(0, d.rows.shape[0], (cfg.batch_size,), generator=gen)]
            i = pick.to(device)  # [B]
            acc += learner.update(Batch(obs[i], act[i], rew[i], mask[i], obs[nxt[i]]))
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = _metrics_row(acc / (step % cfg.log_every or cfg.log_every), step, t0)
                acc.zero_()
                row["actor_lr"] = learner.actor_lr
                lines.append(json.dumps(row) + "\n")
                text = f"q {row['q_mean']:.3g} v {row['v_mean']:.3g} adv {row['adv_mean']:+.3g}"
                bar.update(info=text)
                if not progress and step % (cfg.log_every * 10) == 0:
                    print(f"iql step {step}/{cfg.steps} {text}", flush=True)
            bar.update(completed=step)
    return nets, lines


def _metrics_row(means: torch.Tensor, step: int, t0: float) -> dict[str, Any]:
    """One metrics.jsonl line from the window's mean stats; a diverged loss is an error."""
    stats = dict(zip(STATS, means.tolist(), strict=True))
    row: dict[str, Any] = {"kind": "iql", "step": step, **stats}
    if not all(np.isfinite(row[k]) for k in ("q_loss", "v_loss", "actor_loss")):
        raise TrajplanError(
            f"IQL training diverged at step {step} (q_loss {row['q_loss']}, v_loss "
            f"{row['v_loss']}): lower the learning rate or the temperature"
        )
    row["wall_s"] = round(time.perf_counter() - t0, 3)
    return row


def _write_run(
    out: Path,
    nets: IQLNets,
    lines: list[str],
    d: _Data,
    cfg: IQLConfig,
    info: EnvInfo,
    episodes: Episodes,
    dataset_id: str,
    fit_s: float,
) -> None:
    """The run directory: the mean actor, the critic, metrics.jsonl, then config.json
    (last: what `is_iql_run` looks for, so a half-written run never looks finished)."""
    nets = nets.cpu()
    about = {"env_id": info.gym_id, "dataset_id": dataset_id, "training_steps": cfg.steps}
    ws, bs = export_actor(nets.actor, d.mean, d.std, d.low, d.high)
    low32, high32 = d.low.astype(np.float32), d.high.astype(np.float32)
    actor = Actor(ws, bs, "relu", low32, high32,
                  meta={**about, "algorithm_name": "iql", "level": "iql"})  # fmt: skip
    critic = Critic(
        copy.deepcopy(nets.q1_target), copy.deepcopy(nets.q2_target), copy.deepcopy(nets.v),
        torch.as_tensor(d.mean), torch.as_tensor(d.std), torch.as_tensor(low32),
        torch.as_tensor(high32), d.reward_scale,
        meta={**about, "discount": cfg.discount, "expectile": cfg.expectile,
              "reward_offset": cfg.reward_offset, "q": "target"},
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    save_actor(actor, out / POLICY_FILE)
    save_critic(critic, out / CRITIC_FILE)
    atomic_write(out / METRICS_FILE, lambda p: p.write_text("".join(lines)))
    last = json.loads(lines[-1])
    write_json(
        out / CONFIG_FILE,
        {
            "format": IQL_FORMAT,
            "kind": "iql",
            "status": "finished",
            "env": info.name,
            "env_id": info.gym_id,
            "dataset_id": dataset_id,
            "ref_min": episodes.ref_min,
            "ref_max": episodes.ref_max,
            "ref_source": episodes.ref_source,
            "domain": iql_domain(info.gym_id),
            "n_transitions": int(d.rows.shape[0]),
            "reward_scale": d.reward_scale,
            "last": {k: last[k] for k in STATS},
            "wall_s": round(fit_s, 3),
            "updates_per_s": round(cfg.steps / max(fit_s, 1e-9), 1),
            "config": asdict(cfg),
        },
    )
