"""The planner an evaluation drives: context bookkeeping around `beam_search`.

The planner keeps the last `max_context_transitions` real transitions of every episode,
`[obs, executed action, raw reward, value placeholder 1e6]`, tokenized, and plans from them
and the current observation every `plan_freq` steps. Episodes run in lockstep; a finished one
is dropped from the batch (`Planner.drop`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from trajplan.config import PlanConfig
from trajplan.config import check_plan_config as check_plan_values
from trajplan.data.hindsight import goal_tokens
from trajplan.data.tokens import Discretizer
from trajplan.errors import TrajplanError
from trajplan.model.cache import KVCache
from trajplan.model.gpt import TrajectoryGPT
from trajplan.planner.candidates import CandidateSource
from trajplan.planner.prior import PriorCandidates, PriorProposals, load_prior, prior_rows
from trajplan.planner.sampling import Uniforms, beam_scores, uniforms_per_plan
from trajplan.planner.scorers import CriticScorer, LikelihoodScorer, Scorer
from trajplan.planner.search import PlanResult, beam_search

VALUE_PLACEHOLDER = 1e6  # value slot of context transitions (hidden by the attention mask)


def plan_window(model: TrajectoryGPT, cfg: PlanConfig) -> int:
    """Most tokens the model sees: max_context_transitions * D - 1, capped by its block."""
    return min(model.block_size, cfg.max_context_transitions * model.transition_dim - 1)


def check_plan_config(cfg: PlanConfig, model: TrajectoryGPT | None = None) -> None:
    """Raise a one-line TrajplanError for options the beam search cannot run with: the plan
    section's own values (trajplan.config), then, given a model, what must fit it."""
    check_plan_values(cfg)
    if model is None:
        return
    n_classes = model.vocab_size + 1
    for name in ("k_obs", "k_act", "k_rew"):
        k = getattr(cfg, name)
        if k is not None and not 1 <= k <= n_classes:
            raise TrajplanError(
                f"plan.{name} must be between 1 and {n_classes} (bins + stop) or none, got {k}"
            )
    D = model.transition_dim
    if cfg.horizon > 1 and plan_window(model, cfg) < D:
        raise TrajplanError(
            f"the planning window ({plan_window(model, cfg)} tokens) holds less than one "
            f"transition ({D} tokens): use max_context_transitions >= 2"
        )


def plan_scorer(cfg: PlanConfig, scorer: Scorer | None) -> Scorer | None:
    """The scorer the search ranks with (None: TT's value): the given one, checked against
    `plan.critic` and `plan.objective`, or the likelihood scorer of objective likelihood."""
    if cfg.critic and scorer is None:
        raise TrajplanError(
            "plan.critic: the critic is loaded with its run (trajplan.runs.load_run), "
            "or pass a CriticScorer as scorer="
        )
    if cfg.objective == "likelihood":  # imitation: the model's likelihood of the plan
        if scorer is not None and not scorer.needs_logp:
            raise TrajplanError("plan.objective likelihood ranks by likelihood: no scorer=")
        scorer = scorer or LikelihoodScorer()
    return scorer


class Predictions(NamedTuple):
    """What the model predicted for the actions `Planner.act` just returned, [E] each."""

    reward: np.ndarray  # expected reward of this step
    value: np.ndarray  # score of the plan the actions come from (its predicted return)
    from_prior: np.ndarray | None  # bool: the plan's first action was the prior's (plan.prior)


def check_critic(
    scorer: Scorer | None, goal_dims: Sequence[int] | None, obs_dim: int, act_dim: int
) -> None:
    """TT + Q needs a model that plans the critic's observations, without a goal of its
    own: a goal-conditioned model failed at its first plan, naming tensor shapes."""
    if not isinstance(scorer, CriticScorer):
        return
    critic = scorer.critic
    if goal_dims:
        dims = ",".join(map(str, goal_dims))
        raise TrajplanError(
            f"--critic (plan.critic) with a goal-conditioned model (goal dims {dims}): its "
            f"plans head for its own goal, which the critic ({critic.obs_dim}-dim "
            "observations, the env's reward) does not see; plan without --critic, or "
            "give the critic to a TT run trained without --goal"
        )
    if critic.obs_dim != obs_dim or critic.act_dim != act_dim:
        raise TrajplanError(
            f"--critic (plan.critic): the critic scores {critic.obs_dim}-dim observations "
            f"and {critic.act_dim}-dim actions, the model plans {obs_dim} and "
            f"{act_dim}: give it an IQL run trained on the model's data"
        )


class Planner:
    """TT beam-search planner for E episodes in lockstep.

    Usage: `reset(n_envs, seeds)`, then per env step `act(obs) -> actions`,
    `observe(obs, actions, rewards)`, and `drop(keep)` when episodes end.
    Observations are what the model sees (Ant: `envs.obs_view`).
    """

    def __init__(
        self,
        model: TrajectoryGPT,
        discretizer: Discretizer,
        cfg: PlanConfig | None = None,
        device: torch.device | str | None = None,
        source: CandidateSource | None = None,
        scorer: Scorer | None = None,
        goal_dims: list[int] | None = None,
    ) -> None:
        """source: candidate actions besides the model's (default: the prior policy of
        `plan.prior`, if any); scorer: how beams are ranked (default: TT's value, or
        the model's likelihood with plan.objective likelihood);
        goal_dims: the observation dims of a goal-conditioned model's goal (`set_goal`)."""
        cfg = cfg or PlanConfig()
        check_plan_config(cfg, model)
        if discretizer.dim != model.transition_dim or discretizer.n_bins != model.vocab_size:
            raise TrajplanError(
                f"discretizer ({discretizer.dim} dims, {discretizer.n_bins} bins) does not "
                f"match the model ({model.transition_dim} dims, {model.vocab_size} bins)"
            )
        self.device = torch.device(device) if device is not None else model.pos_emb.device
        self.model = model.to(self.device).eval()
        self.disc = discretizer
        self.cfg = cfg
        self.obs_dim, self.act_dim = model.cfg.obs_dim, model.cfg.act_dim
        self.D = model.transition_dim
        self.window = plan_window(model, cfg)
        self.mids = torch.as_tensor(discretizer.midpoints(), device=self.device)  # [N, D] f64
        m = prior_rows(cfg.prior_share, cfg.n_expand * cfg.beam_width) if cfg.prior else 0
        if source is None and m:
            actor = load_prior(cfg.prior)
            proposals = PriorProposals(
                actor, discretizer, self.obs_dim, self.act_dim, cfg.prior_noise
            )
            source = PriorCandidates(proposals, m, self.mids)
        self.source, self.scorer = source, plan_scorer(cfg, scorer)
        self.goal_dims = list(goal_dims or [])
        if len(self.goal_dims) != model.goal_dim:
            raise TrajplanError(
                f"the model takes a goal of {model.goal_dim} dims, got goal dims {self.goal_dims}"
            )
        check_critic(self.scorer, self.goal_dims, self.obs_dim, self.act_dim)
        extra = source.draws_per_step if source is not None else 0
        self.n_uniforms = uniforms_per_plan(cfg, self.obs_dim, self.act_dim, extra)
        self._pool: dict[int, list[KVCache]] = {}  # key/value buffers reused by every plan
        self.plan_seconds = 0.0
        self.n_plans = 0
        self.reset(1)

    def reset(self, n_envs: int, seeds: Sequence[int] | None = None) -> None:
        """Start n_envs episodes; episode e samples from a generator seeded with seeds[e]."""
        if n_envs < 1:
            raise TrajplanError(f"need at least one episode, got {n_envs}")
        seeds = list(range(n_envs)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != n_envs:
            raise TrajplanError(f"got {len(seeds)} seeds for {n_envs} episodes")
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.context = torch.zeros(n_envs, 0, self.D, dtype=torch.long, device=self.device)
        self.steps = 0
        self.plan: PlanResult | None = None
        self.goal: torch.Tensor | None = None  # [E, g] goal tokens (goal-conditioned models)

    def set_goal(self, goal: np.ndarray) -> None:
        """The goal of every episode, values [E, g] of the goal dims (or [g]: all episodes),
        for the plans from now on (goal-conditioned models)."""
        if not self.goal_dims:
            raise TrajplanError("this model has no goal: it was trained without data.goal_dims")
        goal = np.asarray(goal, dtype=np.float64)
        if goal.ndim == 1 and goal.shape[0] == len(self.goal_dims):
            goal = np.repeat(goal[None], self.n_envs, axis=0)
        if goal.shape != (self.n_envs, len(self.goal_dims)):
            raise TrajplanError(
                f"expected a goal of {len(self.goal_dims)} values per episode "
                f"(dims {','.join(map(str, self.goal_dims))}), got shape {goal.shape}"
            )
        tok = goal_tokens(self.disc, goal, self.goal_dims)  # [E, g]
        self.goal = torch.as_tensor(tok, device=self.device)

    @property
    def n_envs(self) -> int:
        return len(self.generators)

    def _check_obs(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        if obs.shape != (self.n_envs, self.obs_dim):
            raise TrajplanError(
                f"expected observations of shape ({self.n_envs}, {self.obs_dim}), got {obs.shape}"
            )
        return obs

    @torch.inference_mode()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Observations [E, o] -> actions [E, a] (float64 bin midpoints)."""
        obs = self._check_obs(obs)
        row = self.steps % self.cfg.plan_freq
        if row == 0 and self.goal_dims and self.goal is None:
            raise TrajplanError("this model is goal-conditioned: set a goal first (set_goal)")
        if row == 0:
            obs_tok = torch.as_tensor(
                self.disc.discretize(obs, dims=slice(0, self.obs_dim)), device=self.device
            )  # [E, o]
            ctx = torch.cat([self.context.flatten(1), obs_tok], dim=1)  # [E, P]
            t0 = time.perf_counter()
            uniforms = Uniforms(self.generators, self.n_uniforms, self.device)
            self.plan = beam_search(
                self.model, ctx, self.cfg, self.mids, uniforms, self.window, self._pool,
                self.source, torch.as_tensor(obs, device=self.device), self.scorer, self.goal,
            )  # fmt: skip
            assert uniforms.offset == self.n_uniforms, "plan consumed an unexpected draw count"
            self.plan_seconds += time.perf_counter() - t0
            self.n_plans += 1
        assert self.plan is not None
        o, a = self.obs_dim, self.act_dim
        act_tok = self.plan.tokens[:, row, o : o + a].cpu().numpy()
        return self.disc.reconstruct(act_tok, dims=slice(o, o + a))

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Add the executed transitions (obs before the step, action, raw reward) to the context."""
        obs = self._check_obs(obs)
        actions = np.asarray(actions, dtype=np.float64).reshape(self.n_envs, self.act_dim)
        rewards = np.asarray(rewards, dtype=np.float64).reshape(self.n_envs, 1)
        placeholder = np.full_like(rewards, VALUE_PLACEHOLDER)
        trans = np.concatenate([obs, actions, rewards, placeholder], axis=1)  # [E, D]
        tok = torch.as_tensor(self.disc.discretize(trans), device=self.device)
        keep = self.cfg.max_context_transitions
        self.context = torch.cat([self.context, tok[:, None]], dim=1)[:, -keep:]
        self.steps += 1

    def drop(self, keep: np.ndarray | Sequence[bool]) -> None:
        """Keep only the episodes where keep[e] is true (the others have ended)."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.n_envs,):
            raise TrajplanError(f"keep mask of shape {keep.shape} for {self.n_envs} episodes")
        idx = torch.as_tensor(np.flatnonzero(keep), device=self.device)
        self.generators = [g for g, k in zip(self.generators, keep, strict=True) if k]
        self.context = self.context.index_select(0, idx)
        if self.goal is not None:
            self.goal = self.goal.index_select(0, idx)
        if self.plan is not None:
            self.plan = self.plan.select(idx)

    def predictions(self) -> Predictions:
        """What the model predicted for the actions `act` just returned (`Predictions`;
        from_prior is None without a candidate source). Under objective likelihood the
        value is still the plan's predicted return (TT's score of it), not its likelihood."""
        assert self.plan is not None, "call act() first"
        row = (self.steps % self.cfg.plan_freq) if self.cfg.plan_freq > 1 else 0
        value = self.plan.value
        if self.cfg.objective == "likelihood":
            value = beam_scores(self.plan.rewards, self.cfg.discount)
        return Predictions(
            self.plan.rewards[:, row].cpu().numpy(),
            value.cpu().numpy().astype(np.float64),
            self.plan.from_source.cpu().numpy() if self.source is not None else None,
        )

    @property
    def ms_per_plan(self) -> float:
        return 1000.0 * self.plan_seconds / max(self.n_plans, 1)
