"""An IQL run while it trains: its resume state, when that is saved, snapshots, and the files
of the run directory (`trajplan.baselines.iql.train_iql` drives them).

    RUN/.lock              held while a process trains into RUN (a second one fails at once)
    RUN/state.pt           the resume state (format trajplan-iql-state/1): the five nets
                           (the target twin Q included), the three Adam optimisers and the
                           actor's cosine schedule, the batch generator, torch's RNG, the
                           step, the metrics lines and the running means since the last
                           one, the wall time, the data's normalisation and fingerprint, the
                           dataset, env and settings. Written (all-or-nothing, with
                           metrics.jsonl) at the start, every `save_every` updates, every
                           `save_every_min` minutes and on Ctrl-C / SIGTERM (status
                           "interrupted"); removed once the run is finished
    RUN/snapshots/step_K/  (`snapshot_every`) a complete IQL run of the weights after update
                           K, with its own config.json (status "snapshot", step K): eval and
                           `--critic` take it. A point on this run's learning curve, not a
                           run of K updates: the actor's learning rate follows the cosine over
                           all `steps`, so a run trained for K updates has another actor (its
                           critic is the same: Q and V never see the actor)
    RUN/config.json        written last, when finished: what makes RUN a run

A resumed run continues to the same weights, bit for bit, as one never stopped (same
device, same thread count); it refuses other settings or a changed dataset in one line. The
rules of the run directory (lock, dead end, reading state.pt, saving by steps or the clock)
are every training's (`trajplan.runs.lifecycle`); the loop and its counters are
`trajplan.training.minibatch`'s. What is IQL's own: the state's contents (`capture`, `restore`),
what a resume must match, snapshots and the run's files.
"""

from __future__ import annotations

import copy
import datetime as _dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajplan.baselines.bc import export_actor
from trajplan.baselines.iql_data import Transitions
from trajplan.baselines.iql_nets import IQLLearner, IQLNets
from trajplan.errors import TrajplanError
from trajplan.model.actor import POLICY_FILE, Actor, save_actor
from trajplan.runs import lifecycle
from trajplan.runs.iql import (
    CONFIG_FILE,
    CRITIC_FILE,
    METRICS_FILE,
    Critic,
    is_iql_run,
    save_critic,
)
from trajplan.runs.lifecycle import STATE_FILE, SaveClock
from trajplan.runtime import DirLock, staged_writes, write_json
from trajplan.training.minibatch import Counters

STATE_FORMAT = "trajplan-iql-state/1"
SNAPSHOTS = "snapshots"


@dataclass
class Saving:
    """When a run saves its state and writes snapshots; none of it changes a weight, so a
    resumed run may choose them anew."""

    every: int = 10_000  # updates between two saved states
    every_min: float | None = 5.0  # also after this many minutes (a kill -9 loses less)
    snapshot_every: int | None = None  # RUN/snapshots/step_K every this many updates

    def check(self) -> None:
        if self.every < 1:
            raise TrajplanError(f"--save-every must be at least 1, got {self.every}")
        if self.every_min is not None and not self.every_min > 0:
            raise TrajplanError(f"--save-every-min must be > 0, got {self.every_min}")
        if self.snapshot_every is not None and self.snapshot_every < 1:
            raise TrajplanError(f"--snapshot-every must be at least 1, got {self.snapshot_every}")


# -- the run directory -------------------------------------------------------------------------


def open_run_dir(out: Path, resume: bool) -> tuple[DirLock, dict[str, Any] | None]:
    """Lock RUN (`trajplan.runs.lifecycle`: new, empty or a dead end, or one to resume); return
    (lock, its saved state) to resume, (lock, None) for a new run. Anything else is one
    TrajplanError."""
    resumable = (out / STATE_FILE).is_file()
    lock = lifecycle.open_run_dir(out, resume, (SNAPSHOTS,), resumable)
    try:
        if not resume:
            shutil.rmtree(out / SNAPSHOTS, ignore_errors=True)  # a dead end's, if any
            return lock, None
        return lock, load_state(out)
    except BaseException:
        lock.release(remove_if_unused=True)
        raise


def load_state(out: Path) -> dict[str, Any]:
    """RUN/state.pt; absent, damaged or foreign: one TrajplanError."""
    absent = (
        "not an IQL run, or stopped before its first checkpoint: start it again without --resume"
    )
    return lifecycle.load_state(out, STATE_FORMAT, "IQL", absent)


def saved_manifest(out: str | Path) -> dict[str, Any] | None:
    """What a run to resume was started with (dataset_id, env, config, saving...), None
    when it is finished; an absent or damaged state is one TrajplanError."""
    out = Path(out)
    if is_iql_run(out):
        return None
    lifecycle.check_out(out, resume=True)
    return dict(load_state(out)["manifest"])


def check_resume(saved: dict[str, Any], out: Path, dataset_id: str, env: str | None,
                 config: dict[str, Any] | None) -> None:  # fmt: skip
    """The resumed run's dataset, env and settings must be the run's own (config None: the
    run's); checked before any data is read."""
    m = saved["manifest"]
    if dataset_id != m["dataset_id"]:
        raise TrajplanError(
            f"cannot resume {out}: it trains on {m['dataset_id']}, not {dataset_id}"
        )
    if env is not None and env != m["env"]:
        raise TrajplanError(f"cannot resume {out}: it acts in {m['env']}, not {env}")
    if config is not None and config != m["config"]:
        diff = [f"{k} {m['config'].get(k)!r} -> {v!r}" for k, v in config.items()
                if m["config"].get(k) != v]  # fmt: skip
        raise TrajplanError(
            f"cannot resume {out} with other settings ({', '.join(diff)}): leave them out to "
            "continue the run as it began, or start a new run"
        )


def check_same_data(saved: dict[str, Any], out: Path, fingerprint: str, d: Transitions) -> None:
    """The dataset and its normalisation must be the run's (checked after reading it)."""
    m, norm = saved["manifest"], saved["norm"]
    same = torch.equal(norm["mean"], torch.as_tensor(d.mean)) and torch.equal(
        norm["std"], torch.as_tensor(d.std)
    )
    if m["data_fingerprint"] != fingerprint or not same or norm["reward_scale"] != d.reward_scale:
        raise TrajplanError(
            f"cannot resume {out}: dataset {m['dataset_id']} changed since the run began "
            f"({m['n_steps']} steps then, other contents or size now): start a new run"
        )


# -- the state ---------------------------------------------------------------------------------


def capture(status: str, p: Counters, learner: IQLLearner, gen: torch.Generator,
            manifest: dict[str, Any], d: Transitions) -> dict[str, Any]:  # fmt: skip
    """The resume state (CPU tensors, storable with weights_only)."""

    def cpu(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return obj.detach().cpu().clone()
        if isinstance(obj, dict):
            return {k: cpu(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(cpu(v) for v in obj)
        return obj

    return {
        "format": STATE_FORMAT,
        "status": status,
        "step": p.step,
        "saved_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "manifest": manifest,
        "nets": cpu(learner.nets.state_dict()),
        "q_opt": cpu(learner.q_opt.state_dict()),
        "v_opt": cpu(learner.v_opt.state_dict()),
        "actor_opt": cpu(learner.actor_opt.state_dict()),
        "actor_sched": learner.actor_sched.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "acc": cpu(p.acc),
        "lines": list(p.lines),
        "wall_s": p.wall_s,
        "threads": torch.get_num_threads(),
        "norm": {"mean": torch.as_tensor(d.mean), "std": torch.as_tensor(d.std),
                 "reward_scale": d.reward_scale},
    }  # fmt: skip


def restore(saved: dict[str, Any], learner: IQLLearner, gen: torch.Generator,
            device: torch.device, out: Path) -> Counters:  # fmt: skip
    """Nets, optimisers, schedule, generator and counters back from a saved state."""
    threads = saved.get("threads")
    if threads is not None and threads != torch.get_num_threads():
        from rich.console import Console

        Console(stderr=True).print(
            f"[yellow]note: resuming with {torch.get_num_threads()} threads, the run had "
            f"{threads}: the weights may differ in their last bits from a run never stopped[/]",
            highlight=False,
        )
    try:
        learner.nets.load_state_dict(saved["nets"])
        learner.q_opt.load_state_dict(saved["q_opt"])
        learner.v_opt.load_state_dict(saved["v_opt"])
        learner.actor_opt.load_state_dict(saved["actor_opt"])
        learner.actor_sched.load_state_dict(saved["actor_sched"])
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        acc = saved["acc"].to(device)
        return Counters(int(saved["step"]), acc, list(saved["lines"]), float(saved["wall_s"]))
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise TrajplanError(f"{out}: resume state does not fit ({detail})") from None


class Checkpoints:
    """When a run saves its state (every `every` updates, every `every_min` minutes) and
    writes snapshots; `save` writes the state and metrics.jsonl all-or-nothing."""

    def __init__(self, out: Path, saving: Saving) -> None:
        self.out, self.saving = out, saving
        self.clock = SaveClock(saving.every, saving.every_min)

    def due(self, step: int) -> bool:
        return self.clock.due(step)

    def snapshot_due(self, step: int) -> bool:
        k = self.saving.snapshot_every
        return k is not None and step % k == 0

    def snapshot_dir(self, step: int) -> Path:
        return self.out / SNAPSHOTS / f"step_{step}"

    def save(self, state: dict[str, Any]) -> None:
        lines = "".join(state["lines"])
        with staged_writes() as stage:
            stage(self.out / STATE_FILE, lambda p: torch.save(state, p))
            stage(self.out / METRICS_FILE, lambda p: p.write_text(lines))
        self.clock.saved()

    def finish(self) -> None:
        """The run is written: its resume state is no longer needed."""
        (self.out / STATE_FILE).unlink(missing_ok=True)


# -- the run's files ---------------------------------------------------------------------------


def write_run(out: Path, nets: IQLNets, lines: list[str], d: Transitions,
              doc: dict[str, Any]) -> None:  # fmt: skip
    """A run directory: the mean actor, the critic, metrics.jsonl, then config.json `doc`
    (last: what `is_iql_run` looks for, so a half-written run never looks finished). The
    nets stay where they are (a CPU copy is exported)."""
    nets = copy.deepcopy(nets).cpu()
    c = doc["config"]
    about = {"env_id": doc["env_id"], "dataset_id": doc["dataset_id"],
             "training_steps": doc["step"]}  # fmt: skip
    ws, bs = export_actor(nets.actor, d.mean, d.std, d.low, d.high)
    low32, high32 = d.low.astype(np.float32), d.high.astype(np.float32)
    actor = Actor(ws, bs, "relu", low32, high32,
                  meta={**about, "algorithm_name": "iql", "level": "iql"})  # fmt: skip
    critic = Critic(
        nets.q1_target, nets.q2_target, nets.v, torch.as_tensor(d.mean), torch.as_tensor(d.std),
        torch.as_tensor(low32), torch.as_tensor(high32), d.reward_scale,
        meta={**about, "discount": c["discount"], "expectile": c["expectile"],
              "reward_offset": c["reward_offset"], "q": "target"},
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    save_actor(actor, out / POLICY_FILE)
    save_critic(critic, out / CRITIC_FILE)
    with staged_writes() as stage:
        stage(out / METRICS_FILE, lambda p: p.write_text("".join(lines)))
    write_json(out / CONFIG_FILE, doc)
