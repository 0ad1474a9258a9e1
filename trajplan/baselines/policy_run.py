"""What BC and IQL runs share: a run whose exported actor acts alone (no search), and the
checks that pick a dataset's env and action box before either trains.

    PolicyRun     a loaded run directory as a `trajplan.runs.Run` (kind "bc" or "iql")
    has_format    whether a directory holds a run of a format (its config.json says so)
    read_run      a policy run directory, loaded as its class
    env_of        the env to act in: --env, the dataset's recorded env, its id's env name
    action_box    the env's action bounds
    training_data episodes (read unless given), their env and action box, checked to fit
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trajplan.actors import POLICY_FILE, Actor, BatchedActor, load_actor
from trajplan.agent import Agent
from trajplan.data.episodes import Episodes, load_episodes
from trajplan.envs.references import References, references_for
from trajplan.envs.registry import EnvInfo, check_fits, env_for_dataset, make_env, resolve_env
from trajplan.errors import TrajplanError


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


def env_of(env: str | None, env_id: str | None, dataset_id: str) -> EnvInfo:
    """The env to act in: --env, else the dataset's recorded env, else its id's env name."""
    for name in (env, env_id):
        if name:
            try:
                return resolve_env(name)
            except TrajplanError:
                if name is env:
                    raise
    info = env_for_dataset(dataset_id)
    if info is None:
        raise TrajplanError(f"cannot tell the env of dataset {dataset_id!r}: pass --env")
    return info


def action_box(env_name: str) -> tuple[np.ndarray, np.ndarray]:
    """The env's action bounds, low and high ([a] each, float64)."""
    probe = make_env(env_name)
    try:
        space = probe.action_space
        return np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    finally:
        probe.close()


def training_data(
    dataset_id: str, env: str | None, episodes: Episodes | None = None
) -> tuple[Episodes, EnvInfo, np.ndarray, np.ndarray]:
    """(episodes, env, action low, action high) for training on a dataset; the dataset's
    actions must fit the env's box."""
    episodes = episodes or load_episodes(dataset_id)
    info = env_of(env, episodes.env_id, dataset_id)
    low, high = action_box(info.name)
    if episodes.act_dim != low.shape[0]:
        raise TrajplanError(
            f"dataset {dataset_id!r} has {episodes.act_dim} action dims, {info.gym_id} has "
            f"{low.shape[0]}: pick a dataset for this env"
        )
    return episodes, info, low, high
