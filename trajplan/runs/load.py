"""Trained runs behind one interface: load one, evaluate it, or ask it for actions.

    load_run(path)   a TT run (it plans with beam search), or a BC or IQL run (its policy
                     acts); run_kind(path) says which without loading it
    Run              what evaluation, workers and the CLI need of any run: its env, its
                     reference scores, and a batched policy for E episodes in lockstep
    Agent            one episode at a time, the single-step API of SB3 or d3rlpy
                     (`trajplan.runs.agent`):

    run = load_run("runs/tt")
    agent = run.agent(seed=0)                  # agent.reset(seed) starts each episode;
                                               # one CPU thread as the CLI (threads=)
    action = agent.act(obs)                    # TT: a plan's first action; BC: the policy's
    agent.observe(obs, action, reward)         # the planner's context

A run kind is one class with these members; `run_kind` tells the kinds apart by the
format in their config.json (`trajplan.runs.checkpoint.FORMAT`,
`trajplan.runs.policy.BC_FORMAT`, `trajplan.runs.iql.IQL_FORMAT`). TT + Q: a TT run whose
`plan.critic` names an IQL run plans with that run's critic as its scorer (`load_critic`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from trajplan.config import PlanConfig, parse_goal_dims
from trajplan.configs.convert import to_dict
from trajplan.envs.references import References, references_for
from trajplan.envs.registry import check_fits
from trajplan.errors import TrajplanError
from trajplan.planner import Planner, check_plan_config
from trajplan.planner.goals import GoalPlanner, env_goal_size
from trajplan.planner.scorers import Critic, CriticScorer
from trajplan.runs.agent import Agent
from trajplan.runs.checkpoint import Checkpoint, load_checkpoint
from trajplan.runs.iql import IQLRun, is_iql_run, load_iql
from trajplan.runs.policy import BCRun, is_bc_run, load_bc
from trajplan.threads import PLAN_THREADS


class BatchedPolicy(Protocol):
    """E episodes in lockstep (`trajplan.envs.rollout.rollout` drives it): a `Planner` or
    an `trajplan.model.actor.BatchedActor`."""

    def reset(self, n_envs: int, seeds: Any = None) -> None: ...
    def act(self, obs: np.ndarray) -> np.ndarray: ...
    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None: ...
    def drop(self, keep: np.ndarray) -> None: ...


class Run(Protocol):
    """A trained run, whatever trained it."""

    kind: str  # "tt" or "bc"
    run_dir: Path
    env: str  # the env it was trained for
    dataset_id: str | None
    weights: str | None  # which weights act (TT: last, best or best-eval; else None)
    plan: PlanConfig | None  # the search's settings (TT), None for a policy that acts
    action_noise: float  # noise on a policy's actions (BC diagnostics), 0 for TT

    def references(self, env: str) -> References:
        """Reference returns for normalized scores in `env` (its dataset's, else D4RL's)."""
        ...

    def policy(self, env: str, device: torch.device) -> BatchedPolicy:
        """A batched policy for `env` (checked to fit the run) on `device`."""
        ...

    def settings(self) -> dict[str, Any]:
        """What an eval file records as the run's acting settings ("plan")."""
        ...

    def agent(
        self,
        env: str | None = None,
        seed: int = 0,
        device: str = "auto",
        threads: int | None = PLAN_THREADS,
    ) -> Agent:
        """The run acting in one episode at a time in `env` (default: its own), on `threads`
        CPU threads (1, as the CLI; None: torch's own setting)."""
        ...


@dataclasses.dataclass
class TTRun:
    """A trained TT model that plans with beam search (`trajplan.planner.Planner`)."""

    checkpoint: Checkpoint
    plan: PlanConfig
    goal: list[float] | None = None  # a goal-conditioned model's fixed goal (else the env's)
    kind = "tt"
    action_noise = 0.0

    @property
    def run_dir(self) -> Path:
        return self.checkpoint.run_dir

    @property
    def env(self) -> str:
        return self.checkpoint.env

    @property
    def dataset_id(self) -> str | None:
        return self.checkpoint.dataset_id

    @property
    def weights(self) -> str | None:
        return self.checkpoint.which

    def references(self, env: str) -> References:
        c = self.checkpoint
        return references_for(env, c.ref_min, c.ref_max, c.ref_source or "")

    def policy(self, env: str, device: torch.device) -> Planner | GoalPlanner:
        """The planner (a goal-conditioned model's: a `GoalPlanner`, which takes the goal
        from the env's observations unless `goal` is set)."""
        model = self.checkpoint.model
        n_goal = env_goal_size(env) if model.goal_dim else 0
        check_env_matches(model.cfg.obs_dim + n_goal, model.cfg.act_dim, env, self.env or None)
        check_plan_config(self.plan, model)
        scorer = None
        if self.plan.critic:  # TT + Q: the critic scores the beams
            critic = load_critic(self.plan.critic, env, device)
            scorer = CriticScorer(critic, self.plan.discount)
        disc = self.checkpoint.discretizer
        dims = self.checkpoint.config.data.goal_dims
        goal_dims = parse_goal_dims(dims) if model.goal_dim and dims else None
        planner = Planner(
            model.to(device), disc, self.plan, device, scorer=scorer, goal_dims=goal_dims
        )
        if model.goal_dim:
            return GoalPlanner(planner, n_goal, self.goal)
        if self.goal is not None:
            raise TrajplanError("--goal: this model has no goal (trained without --goal)")
        return planner

    def settings(self) -> dict[str, Any]:
        return to_dict(self.plan)

    def agent(
        self,
        env: str | None = None,
        seed: int = 0,
        device: str = "auto",
        threads: int | None = PLAN_THREADS,
    ) -> Agent:
        return Agent(self, env or self.env, seed, device, threads)


def check_env_matches(obs_dim: int, act_dim: int, env: str, trained_env: str | None) -> None:
    """The env must be the one the model was trained on, with the same dimensions."""
    check_fits(env, (obs_dim, act_dim), "this model", trained_env)


def load_run(
    path: str | Path,
    device: str | torch.device = "auto",
    weights: str = "last",
    plan: PlanConfig | None = None,
    action_noise: float = 0.0,
) -> TTRun | BCRun | IQLRun:
    """A run directory (or a TT run's .safetensors file): a BC or IQL run (its policy acts),
    else a TT run (it plans).

    weights: a TT run's last, best or best-eval weights; plan: a TT run's search settings
    (default: its own; a policy run acts without one); action_noise: a policy run's actions
    plus that much Gaussian noise (x each action's half range; a search's prior candidates,
    picked at random).
    """
    p = Path(path)
    kind = run_kind(p)
    if kind in POLICY_LOADERS:  # a policy run: its directory, noise on its actions
        run = POLICY_LOADERS[kind](p.parent if p.is_file() else p)
        return dataclasses.replace(run, action_noise=check_noise(action_noise))
    if action_noise:
        raise TrajplanError(
            "action noise is for policy runs (bc, iql); a TT run's prior: plan.prior_noise"
        )
    ckpt = load_checkpoint(p, device=device, which=weights)
    return TTRun(ckpt, plan if plan is not None else ckpt.config.plan)


POLICY_LOADERS = {"bc": load_bc, "iql": load_iql}


def run_kind(path: str | Path) -> str:
    """ "bc", "iql" or "tt" for a run directory (or a TT run's .safetensors file), without
    loading it; the format in its config.json decides (a TT run's is checked on loading)."""
    p = Path(path)
    base = p.parent if p.is_file() else p
    if is_iql_run(base):
        return "iql"
    if is_bc_run(base):
        return "bc"
    return "tt"


def load_critic(path: str | Path, env: str, device: str | torch.device = "cpu") -> Critic:
    """The critic of an IQL run (`plan.critic`), checked to fit `env`: one line otherwise."""
    if not Path(path).is_dir() or run_kind(path) != "iql":
        raise TrajplanError(f"plan.critic: {path} is not an IQL run (train one: trajplan iql)")
    run = load_iql(path)
    critic = run.critic(device)
    check_fits(env, (critic.obs_dim, critic.act_dim), f"the critic {path}", run.env)
    return critic


def check_noise(noise: float) -> float:
    if not (np.isfinite(noise) and noise >= 0):
        raise TrajplanError(f"action noise must be >= 0, got {noise}")
    return float(noise)
