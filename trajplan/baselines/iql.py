"""Implicit Q-Learning (IQL; Kostrikov, Nair, Levine 2021, "Offline Reinforcement Learning with
Implicit Q-Learning"): an offline-RL baseline next to TT and BC, and the critic of TT + Q
(`plan.critic`).

Written for trajplan after the paper and the authors' JAX code (ikostrikov/implicit_q_learning,
read, not copied). d3rlpy cannot be used: its 2.8.1 pins gymnasium==1.0.0 and imports gym,
which this stack (Gymnasium 1.x, MuJoCo 3, Minari) cannot take.

    iql_preset(env)  the settings of the env's domain (below)
    train_iql        a Minari dataset through the loader BC and TT use
                     (`trajplan.data.transitions.load_episodes`) -> a run directory
                     (`trajplan.runs.iql`: the mean actor, the critic, metrics);
                     it saves its state as it goes and `resume=True` continues it exactly
    load_iql         (`trajplan.runs.iql`) the run (`IQLRun`, a `trajplan.runs.Run`), its
                     critic (`Critic`)

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

Data: `trajplan.baselines.iql_data`. The loop and its metrics lines: `trajplan.training.minibatch`
(BC's and the ensemble's too). Saving, resuming, snapshots and the run's files:
`trajplan.baselines.iql_state`, on the run-directory rules every training shares
(`trajplan.runs.lifecycle`). The same seed gives the same weights (CPU, same thread count).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajplan.baselines.iql_data import Transitions, prepare
from trajplan.baselines.iql_nets import (
    STATS,
    Batch,
    Hyper,
    IQLLearner,
    IQLNets,
    iql_bytes,
    iql_state_bytes,
)
from trajplan.baselines.iql_state import (
    Checkpoints,
    Saving,
    capture,
    check_resume,
    check_same_data,
    open_run_dir,
    restore,
    write_run,
)
from trajplan.baselines.training_data import env_of, training_data
from trajplan.configs.convert import from_dict
from trajplan.data.episodes import data_fingerprint
from trajplan.data.store import env_id_of, open_dataset, split_dataset_ids
from trajplan.data.transitions import Episodes
from trajplan.envs.registry import EnvInfo, resolve_env
from trajplan.errors import TrajplanError
from trajplan.guards import check_disk, check_memory, size_text
from trajplan.runs.iql import IQL_FORMAT, is_iql_run
from trajplan.runtime import StopFlag, Stopped, resolve_device, sigterm_as_interrupt
from trajplan.training.minibatch import Counters, Lines, run_steps

__all__ = [
    "IQLConfig",
    "Saving",
    "dataset_env",
    "iql_domain",
    "iql_preset",
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


def resume_settings(
    manifest: dict[str, Any],
    given: dict[str, Any] | None = None,
    saving_given: dict[str, Any] | None = None,
) -> tuple[IQLConfig, Saving]:
    """The settings a run resumes with (`saved_manifest`): its own, with the `given` ones on
    top (train_iql then refuses any that changed, in one line) and `saving_given` (when to
    save may change: no weight depends on it)."""
    cfg = IQLConfig.from_dict({**manifest["config"], **(given or {})})
    return cfg, Saving(**{**manifest["saving"], **(saving_given or {})})


def train_iql(
    dataset_id: str | None,
    out_dir: str | Path,
    cfg: IQLConfig | None = None,
    progress: bool = True,
    *,
    env: str | None = None,
    episodes: Episodes | None = None,
    device: str = "cpu",
    resume: bool = False,
    saving: Saving | None = None,
) -> Path:
    """Train IQL on a dataset and write its run directory (new, empty, or resumed).

    cfg None: the preset of the env's domain; env: the env to act in (default: the
    dataset's); episodes: use these instead of reading the dataset (tests). resume: continue
    RUN from its saved state with its own dataset, env and settings (None: the run's; others
    are refused); a finished run has nothing to do. saving: when the state is saved and
    snapshots are written (`trajplan.baselines.iql_state.Saving`; resume: the run's).
    Ctrl-C or SIGTERM saves the state (status "interrupted") and raises
    `trajplan.runtime.Stopped`."""
    out = Path(out_dir)
    if resume and is_iql_run(out):
        return out  # finished: nothing to do
    if cfg is not None:
        cfg.check()
    if saving is not None:
        saving.check()
    dev = resolve_device(device)
    with sigterm_as_interrupt():
        lock, saved = open_run_dir(out, resume)
        try:
            if saved is not None:
                m = saved["manifest"]
                dataset_id = dataset_id or m["dataset_id"]
                env = resolve_env(env).name if env else None
                check_resume(saved, out, dataset_id, env, None if cfg is None else asdict(cfg))
                env, (cfg, own_saving) = m["env"], resume_settings(m)
                saving = saving or own_saving
            if not dataset_id:
                raise TrajplanError("a new IQL run needs a dataset (--dataset)")
            saving = saving or Saving()
            job = _job(out, dataset_id, env, episodes, cfg)
            job.manifest["saving"] = asdict(saving)  # the next resume's defaults
            _check_room(job, saving, dev)
            if saved is not None:
                check_same_data(saved, out, job.manifest["data_fingerprint"], job.data)
            checkpoints = Checkpoints(out, saving)
            nets, done = _fit(job, saved, checkpoints, progress, dev)
            write_run(out, nets, done.lines, job.data, _doc(job, "finished", done))
            checkpoints.finish()
        finally:
            lock.release(remove_if_unused=True)
    return out


@dataclass
class _Job:
    """What one training run works on and records."""

    out: Path
    dataset_id: str
    info: EnvInfo
    episodes: Episodes
    cfg: IQLConfig
    data: Transitions
    manifest: dict[str, Any]  # what a resumed run must match (saved in the state)


def _job(out: Path, dataset_id: str, env: str | None, episodes: Episodes | None,
         cfg: IQLConfig | None) -> _Job:  # fmt: skip
    """Read and prepare the data (checked against the env) for a run."""
    episodes, info, low, high = training_data(dataset_id, env, episodes)
    cfg = cfg or iql_preset(info.gym_id)
    cfg.check()
    data = prepare(episodes, low, high, cfg)
    manifest = {
        "dataset_id": dataset_id,
        "env": info.name,
        "config": asdict(cfg),
        "data_fingerprint": data_fingerprint(episodes),
        "n_steps": episodes.n_steps,
    }
    return _Job(out, dataset_id, info, episodes, cfg, data, manifest)


def _check_room(job: _Job, saving: Saving, dev: torch.device) -> None:
    """Refuse, before the first update, nets or batches that cannot fit in memory and a
    state or snapshots that cannot fit on disk (trajplan.guards); the folder holds its lock
    only, which the caller removes."""
    o, a, cfg = job.data.obs.shape[1], job.data.act.shape[1], job.cfg
    nets, batch = iql_bytes(o, a, cfg.hidden, 0), iql_bytes(o, a, cfg.hidden, cfg.batch_size)
    need = batch + (job.data.obs.nbytes * 2 if dev.type == "cuda" else 0)  # the data copied
    lower = "--hidden" if nets >= batch - nets else "--batch-size"
    what = f"iql with hidden sizes {list(cfg.hidden)} and batch size {cfg.batch_size:,}"
    check_memory(need, dev, what, lower)
    state = iql_state_bytes(o, a, cfg.hidden)
    snaps = cfg.steps // saving.snapshot_every if saving.snapshot_every else 0
    total = 2 * state + snaps * state // 2  # the state and its next version, the snapshots
    check_disk(job.out, total, state, f"the IQL run ({size_text(state)} a state)")


def _fit(
    job: _Job,
    saved: dict[str, Any] | None,
    checkpoints: Checkpoints,
    progress: bool,
    device: torch.device,
) -> tuple[IQLNets, Counters]:
    """Updates on uniform batches of the usable rows up to cfg.steps (from the saved state's
    step when resuming) in `trajplan.training.minibatch.run_steps`; seeded by cfg.seed (init and
    batches). A non-finite loss is a TrajplanError; Ctrl-C / SIGTERM finish the update,
    save the state and raise Stopped."""
    cfg, d = job.cfg, job.data
    torch.manual_seed(cfg.seed)
    nets = IQLNets(d.obs.shape[1], d.act.shape[1], cfg.hidden).to(device)
    hp = Hyper(cfg.expectile, cfg.temperature, cfg.discount, cfg.polyak, cfg.max_weight,
               cfg.lr, cfg.actor_cosine, cfg.steps)  # fmt: skip
    learner = IQLLearner(nets, hp)
    gen = torch.Generator().manual_seed(cfg.seed)
    if saved is None:
        c = Counters.new(len(STATS), device)
    else:
        c = restore(saved, learner, gen, device, job.out)
    obs, act, rew, mask, nxt = (t.to(device) for t in (d.obs, d.act, d.rew, d.mask, d.nxt))

    def update() -> torch.Tensor:
        pick = d.rows[torch.randint(0, d.rows.shape[0], (cfg.batch_size,), generator=gen)]
        i = pick.to(device)  # [B]
        return learner.update(Batch(obs[i], act[i], rew[i], mask[i], obs[nxt[i]]))  # [S]

    def state(status: str) -> dict[str, Any]:
        return capture(status, c, learner, gen, job.manifest, d)

    def after_step(c: Counters) -> None:
        """Snapshots, then the state: on a stop request (and stop), or when due."""
        if checkpoints.snapshot_due(c.step):
            write_run(checkpoints.snapshot_dir(c.step), nets, c.lines, d, _doc(job, "snapshot", c))
        if stop.requested:
            checkpoints.save(state("interrupted"))
            _stopped(c.step, job.out)
            raise Stopped(stop.requested)
        if c.step < cfg.steps and checkpoints.due(c.step):
            checkpoints.save(state("running"))

    def actor_lr() -> dict[str, Any]:  # in every metrics line
        return {"actor_lr": learner.actor_lr}

    label = f"iql {job.dataset_id}" + (f" (resumed at {c.step})" if c.step else "")
    lines = Lines("iql", STATS, cfg.log_every, _shown, _diverged)
    stop = StopFlag(True)  # Ctrl-C / SIGTERM: finish the update, save, stop
    try:
        if saved is None:
            checkpoints.save(state("running"))  # resumable from the start
        run_steps(update, c, cfg.steps, lines, label, progress, extra=actor_lr, hook=after_step)
    finally:
        stop.close()
    return nets, c


def _shown(row: dict[str, Any]) -> str:
    """A metrics line on the progress bar."""
    return f"q {row['q_mean']:.3g} v {row['v_mean']:.3g} adv {row['adv_mean']:+.3g}"


def _diverged(row: dict[str, Any]) -> TrajplanError:
    return TrajplanError(
        f"IQL training diverged at step {row['step']} (q_loss {row['q_loss']}, v_loss "
        f"{row['v_loss']}): lower the learning rate or the temperature"
    )


def _stopped(step: int, out: Path) -> None:
    from rich.console import Console

    Console(stderr=True).print(
        f"[yellow]stopped at update {step}: state saved; continue with trajplan iql --out "
        f"{out} --resume[/]",
        highlight=False,
    )


def _doc(job: _Job, status: str, c: Counters) -> dict[str, Any]:
    """config.json of the run ("finished") or of a snapshot after update c.step."""
    info, ep, d = job.info, job.episodes, job.data
    doc = {
        "format": IQL_FORMAT,
        "kind": "iql",
        "status": status,
        "step": c.step,
        "env": info.name,
        "env_id": info.gym_id,
        "dataset_id": job.dataset_id,
        "ref_min": ep.ref_min,
        "ref_max": ep.ref_max,
        "ref_source": ep.ref_source,
        "domain": iql_domain(info.gym_id),
        "n_transitions": int(d.rows.shape[0]),
        "reward_scale": d.reward_scale,
        "data_fingerprint": job.manifest["data_fingerprint"],
        "last": {k: v for k, v in c.last().items() if k in STATS},
        "wall_s": round(c.wall_s, 3),
        "updates_per_s": round(c.step / max(c.wall_s, 1e-9), 1),
        "config": asdict(job.cfg),
    }
    if status == "snapshot":
        doc["snapshot_of"] = str(job.out)
        doc["note"] = (
            f"the weights after update {c.step} of a run of {job.cfg.steps}: a point on that "
            "run's curve, not a run of this budget (the actor's cosine spans all its steps)"
        )
    return doc
