"""Policy runs, whose exported actor acts alone (no search): what BC and IQL runs share, and
BC's run format (IQL's: `trajplan.runs.iql`; BC's training: `trajplan.baselines.bc`).

    PolicyRun     a loaded run directory as a `trajplan.runs.Run` (kind "bc" or "iql")
    has_format    whether a directory holds a run of a format (its config.json says so)
    read_run      a policy run directory, loaded as its class
    BCRun         a loaded BC run (format trajplan-bc/1); is_bc_run, load_bc
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trajplan.envs.references import References, references_for
from trajplan.envs.registry import check_fits
from trajplan.errors import TrajplanError
from trajplan.model.actor import POLICY_FILE, Actor, BatchedActor, load_actor
from trajplan.runs.agent import Agent


@dataclass
class PolicyRun:
    """A loaded run directory whose policy (an exported actor) acts: a `trajplan.runs.Run`."""

    run_dir: Path
    actor: Actor
    env: str
    dataset_id: str
    ref_min: float | None
    ref_max: float | None
    ref_source: str | None
    meta: dict[str, Any]
    action_noise: float = 0.0  # Gaussian noise x each action's half range (diagnostics)
    kind = "policy"  # each kind names itself: "bc", "iql"
    weights = None
    plan = None

    def references(self, env: str) -> References:
        return references_for(env, self.ref_min, self.ref_max, self.ref_source or "")

    def policy(self, env: str, device: Any = None) -> BatchedActor:
        """The policy for E episodes (numpy, on the CPU whatever the device)."""
        dims = (self.actor.obs_dim, self.actor.act_dim)
        check_fits(env, dims, f"{self.kind.upper()} run {self.run_dir}")
        return BatchedActor(self.actor, self.action_noise)

    def settings(self) -> dict[str, Any]:
        noise = {"action_noise": self.action_noise} if self.action_noise else {}
        return {"policy": self.kind, **noise}

    def agent(
        self, env: str | None = None, seed: int = 0, device: str = "auto", threads: int | None = 1
    ) -> Agent:
        return Agent(self, env or self.env, seed, device, threads)  # 1 thread: as the CLI


CONFIG_FILE = "config.json"  # a run's manifest; its "format" names the kind


def has_format(path: str | Path, fmt: str) -> bool:
    """True when path is a run directory whose config.json has this format."""
    cfg = Path(path) / CONFIG_FILE
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == fmt
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def read_run(cls: type[PolicyRun], run_dir: str | Path, fmt: str) -> Any:
    """Load a policy run directory of format `fmt` as `cls`; a missing or damaged file is a
    one-line TrajplanError."""
    run_dir = Path(run_dir)
    if not has_format(run_dir, fmt):
        raise TrajplanError(
            f"{run_dir} is not a trajplan {cls.kind.upper()} run (no {fmt} config.json)"
        )
    doc = json.loads((run_dir / CONFIG_FILE).read_text())
    return cls(
        run_dir=run_dir,
        actor=load_actor(run_dir / POLICY_FILE),
        env=str(doc.get("env") or ""),
        dataset_id=str(doc.get("dataset_id") or ""),
        ref_min=doc.get("ref_min"),
        ref_max=doc.get("ref_max"),
        ref_source=doc.get("ref_source"),
        meta=doc,
    )


BC_FORMAT = "trajplan-bc/1"


class BCRun(PolicyRun):
    """A loaded BC run directory: a `trajplan.runs.Run` whose policy acts (no search)."""

    kind = "bc"


def is_bc_run(path: str | Path) -> bool:
    """True when path is a run directory written by `trajplan.baselines.bc.train_bc`."""
    return has_format(path, BC_FORMAT)


def load_bc(run_dir: str | Path) -> BCRun:
    """Read a BC run directory; a missing or damaged file is a one-line TrajplanError."""
    return read_run(BCRun, run_dir, BC_FORMAT)
