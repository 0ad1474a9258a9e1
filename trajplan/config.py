"""Configs as dataclasses; the dicts they are read from and written to, with strict key and
type checks, are `trajplan.configs.convert`'s, the YAML files and their loading by name or
path `trajplan.configs`'.

A config has up to four sections (`data`, `model`, `train`, `plan`) plus `env` and
`dataset` at the top level. Defaults are the reference values (docs/method.md); every unknown
key or wrongly typed value is a one-line TrajplanError. This module is also the one home of
every section's value rules (`check_data_config`, ..., `check_run_config`); what must fit a
given model or dataset is checked where they are known (planner, runprep).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trajplan.errors import TrajplanError


@dataclass
class DataConfig:
    """Minari episodes -> transitions -> tokens (docs/method.md, Data and Tokens)."""

    discount: float = 0.99  # gamma of the value targets
    termination_penalty: float | None = -100.0  # reward of a true termination (None: keep)
    seq_len: int = 10  # transitions per training window (subsampled_sequence_length)
    max_path_length: int = 1000  # steps past this are masked out of the loss
    n_bins: int = 100  # bins per dimension (N)
    discretizer: str = "quantile"  # "quantile" (reference) or "uniform"
    # Not the reference (0 = off): weight each action token's loss by
    # exp(beta * z) of its step's return-to-go (see trajplan.data.weighting).
    action_weighting: float = 0.0
    val_fraction: float = 0.0  # share of episodes held out for a validation loss
    # Not the reference ("reference" is): bins of their own, decoded exactly, for the values of
    # few-valued columns ("discrete": a sparse reward's 0 and 1); trajplan.data.tokens.
    exact_bins: str = "discrete"
    # Not the reference (none = off): goal-conditioned training (trajplan.data.hindsight). The
    # observation dims that form the goal, e.g. "0,1" (a maze's x, y), each window's goal
    # relabelled in hindsight: its episode's final state. A goal env's own goal dims
    # (desired_goal) are dropped from the model's observation.
    goal_dims: str | None = None


@dataclass
class ModelConfig:
    """The TT GPT (docs/method.md, Model). Dimensions are filled in from the data."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1  # embedding, attention and residual dropout
    action_weight: float = 5.0
    reward_weight: float = 1.0
    value_weight: float = 1.0
    # From the data (left empty in YAML files):
    obs_dim: int = 0
    act_dim: int = 0
    vocab_size: int = 0  # = data.n_bins
    block_size: int = 0  # = seq_len * transition_dim - 1
    goal_dim: int = 0  # dims of the goal placed before the sequence (0: no goal; data.goal_dims)

    @property
    def transition_dim(self) -> int:
        return self.obs_dim + self.act_dim + 2


@dataclass
class TrainConfig:
    """Optimizer, schedule and loop (docs/method.md, Optimizer and schedule)."""

    batch_size: int = 256
    lr: float = 6e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    n_epochs_ref: int = 50  # epochs = int(1e6 / n_windows * n_epochs_ref)
    epochs: int | None = None  # overrides the rule above
    max_steps: int | None = None  # stop after this many optimizer steps (quick runs)
    time_limit_s: float | None = None  # stop (and checkpoint) after this much training time
    warmup_mult: float = 1.0  # warmup tokens = warmup_mult * n_windows * block_size
    final_mult: float = 20.0  # final tokens = final_mult * n_windows * block_size
    clamp_schedule: bool = False  # False: the reference's unclamped cosine (rises again)
    # Not the reference: end the (clamped) cosine where the run ends: after `epochs` (more or
    # fewer than final_mult), at max_steps or at time_limit_s (progress = the larger of the
    # token and the time share), so every run anneals its learning rate by its end.
    fit_schedule: bool = False
    val_every: int = 1  # epochs between validation losses (data.val_fraction > 0)
    seed: int = 42
    save_every: int = 1  # epochs between checkpoints
    save_every_min: float | None = 5.0  # also checkpoint (mid-epoch) after this many minutes
    log_every: int = 10  # optimizer steps between metric lines
    # Evaluation during training (trajplan.training.live_eval; 0 = off): plan eval_episodes episodes
    # every eval_every optimizer steps and at the last; eval_episode_steps caps them (cheap,
    # labelled not comparable); the best-scoring weights go to best_eval.safetensors.
    eval_every: int = 0
    eval_episodes: int = 3
    eval_episode_steps: int | None = None
    eval_seed: int = 10_000
    compile: bool = False  # torch.compile the model (CUDA)
    # bf16 autocast in training where the hardware has bf16: CUDA, and CPUs with AVX512_BF16
    # or AMX (trajplan.training.loop.uses_bf16); fp32 elsewhere, and everywhere when false.
    # Weights, optimizer and loss stay fp32. CPU: 1.4-1.8x the tokens/s of fp32 on the
    # reference model (docs/benchmarks.md); runs started before 2026-12-07 trained fp32 there.
    amp: bool = True


@dataclass
class PlanConfig:
    """Beam search (docs/method.md, Planner)."""

    horizon: int = 15
    beam_width: int = 128
    n_expand: int = 2
    k_obs: int | None = 1
    k_act: int | None = None
    k_rew: int | None = 1
    cdf_obs: float | None = None
    cdf_act: float | None = 0.6
    max_context_transitions: int = 5
    discount: float = 0.99
    plan_freq: int = 1  # replan every this many env steps
    # Not the reference (none = off): a policy (a `trajplan bc` run or an *.actor.safetensors
    # file) whose actions fill `prior_share` of every step's candidates, with Gaussian noise
    # of `prior_noise` times each action's half range (trajplan.planner.prior). Share 1: all
    # candidates are the prior's (docs/results.md compares shares).
    prior: str | None = None
    prior_share: float = 1.0
    prior_noise: float = 0.1
    # Not the reference (none = off): TT + Q. An IQL run (`trajplan iql`) whose critic scores
    # the beams instead of TT's value token: the model's predicted rewards up to the last
    # planned state, then the critic's Q of that state and action (trajplan.planner.scorers).
    critic: str | None = None
    # What the beams are ranked by: "return" (TT's predicted rewards and value, or the
    # critic's) or "likelihood" (not the reference's offline-RL search: imitation, the
    # model's log-likelihood of the plan's action and observation tokens, no reward or
    # value; trajplan.planner.scorers.LikelihoodScorer; docs/method.md, Imitation).
    objective: str = "return"
    mode: str = "cached"  # "cached" (exact, fast) or "full" (whole window per token)
    window: str = "slide"  # "slide" (reference) or "grow" (slide only past the block; faster)


@dataclass
class RunConfig:
    """Everything a run needs: what to train on and how."""

    env: str | None = None
    dataset: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)


SEED_LIMIT = 2**32  # seeds are 0 <= seed < 2^32: what numpy, torch and gymnasium all take


def check_seed(value: int, name: str) -> int:
    """One rule for every seed (--seed, train.seed, train.eval_seed, a last episode's seed):
    an integer in [0, 2^32), so numpy, torch and the envs accept it and its derived seeds."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise TrajplanError(f"{name} must be an integer in [0, 2^32 - 1], got {value}")
    return value


PLAN_MODES = ("cached", "full")
PLAN_WINDOWS = ("slide", "grow")
PLAN_OBJECTIVES = ("return", "likelihood")  # plan.objective (trajplan.planner.scorers)
EXACT_BINS = ("reference", "discrete")  # data.exact_bins (trajplan.data.tokens)


def parse_goal_dims(text: str) -> list[int]:
    """data.goal_dims "0,1" -> [0, 1]: distinct dims >= 0, at least one (else one line)."""
    try:
        dims = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        dims = []
    if not dims or min(dims) < 0 or len(set(dims)) != len(dims):
        raise TrajplanError(
            f"data.goal_dims must be distinct observation dims like 0,1, got {text!r}"
        )
    return dims


def check_data_config(cfg: DataConfig) -> None:
    """The data section's values."""
    if cfg.seq_len < 1:
        raise TrajplanError(f"data.seq_len must be at least 1, got {cfg.seq_len}")
    if cfg.n_bins < 1:
        raise TrajplanError(f"data.n_bins must be at least 1, got {cfg.n_bins}")
    if cfg.max_path_length < 1:
        raise TrajplanError(f"data.max_path_length must be at least 1, got {cfg.max_path_length}")
    if not 0.0 < cfg.discount <= 1.0:
        raise TrajplanError(f"data.discount must be in (0, 1], got {cfg.discount}")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise TrajplanError(f"data.val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if not (math.isfinite(cfg.action_weighting) and cfg.action_weighting >= 0.0):
        raise TrajplanError(f"data.action_weighting must be >= 0, got {cfg.action_weighting}")
    if cfg.goal_dims is not None:
        parse_goal_dims(cfg.goal_dims)
    if cfg.exact_bins not in EXACT_BINS:
        raise TrajplanError(
            f"data.exact_bins must be one of {', '.join(EXACT_BINS)}, got {cfg.exact_bins!r}"
        )


def check_model_config(cfg: ModelConfig) -> None:
    """The hyperparameters a model can be built and trained with (dims are checked apart)."""
    for name in ("n_layer", "n_head", "n_embd"):
        if getattr(cfg, name) < 1:
            raise TrajplanError(f"model.{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.n_embd % cfg.n_head:
        raise TrajplanError(
            f"model.n_embd ({cfg.n_embd}) must be a multiple of model.n_head ({cfg.n_head})"
        )
    if not 0.0 <= cfg.dropout < 1.0:
        raise TrajplanError(f"model.dropout must be in [0, 1), got {cfg.dropout}")
    for name in ("action_weight", "reward_weight", "value_weight"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value >= 0):
            raise TrajplanError(f"model.{name} must be a finite number >= 0, got {value}")


def check_train_config(cfg: TrainConfig) -> None:
    """The train section's values (loop, optimizer, schedule, evaluation during training)."""
    for name in ("batch_size", "save_every", "log_every", "n_epochs_ref", "val_every"):
        if getattr(cfg, name) < 1:
            raise TrajplanError(f"train.{name} must be at least 1, got {getattr(cfg, name)}")
    for name in ("epochs", "max_steps"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise TrajplanError(f"train.{name} must be at least 1 (or null), got {value}")
    for name in ("save_every_min", "time_limit_s"):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise TrajplanError(f"train.{name} must be a number > 0 (or null), got {value}")
    check_seed(cfg.seed, "train.seed")
    check_seed(cfg.eval_seed, "train.eval_seed")
    for name in ("lr", "grad_clip", "weight_decay"):
        if not math.isfinite(getattr(cfg, name)):
            raise TrajplanError(f"train.{name} must be a finite number, got {getattr(cfg, name)}")
    if cfg.lr <= 0 or cfg.grad_clip <= 0 or cfg.weight_decay < 0:
        raise TrajplanError("train.lr and train.grad_clip must be > 0, weight_decay >= 0")
    if not all(0 <= b < 1 for b in cfg.betas):
        raise TrajplanError(f"train.betas must be in [0, 1), got {list(cfg.betas)}")
    if not 0 < cfg.warmup_mult < cfg.final_mult:
        raise TrajplanError("train.warmup_mult must be > 0 and below train.final_mult")
    if cfg.eval_every < 0:
        raise TrajplanError(f"train.eval_every must be >= 0 (0 = off), got {cfg.eval_every}")
    if cfg.eval_episodes < 1:
        raise TrajplanError(f"train.eval_episodes must be at least 1, got {cfg.eval_episodes}")
    check_seed(cfg.eval_seed + cfg.eval_episodes - 1, "train.eval_seed + train.eval_episodes - 1")
    if cfg.eval_episode_steps is not None and cfg.eval_episode_steps < 1:
        raise TrajplanError(
            f"train.eval_episode_steps must be at least 1 (or null), got {cfg.eval_episode_steps}"
        )


def check_plan_config(cfg: PlanConfig) -> None:
    """The plan section's values (what fits a given model: trajplan.planner.check_plan_config).

    The horizon itself has no upper limit: the window slides, so the model never sees more
    than the planning window's tokens however far the plan looks ahead.
    """
    for name in ("horizon", "beam_width", "n_expand", "max_context_transitions", "plan_freq"):
        if getattr(cfg, name) < 1:
            raise TrajplanError(f"plan.{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.plan_freq > cfg.horizon:
        raise TrajplanError(
            f"plan.plan_freq ({cfg.plan_freq}) cannot exceed the horizon ({cfg.horizon}): "
            "the plan has no actions beyond it"
        )
    if cfg.mode not in PLAN_MODES:
        raise TrajplanError(f"unknown plan mode {cfg.mode!r}: use one of {', '.join(PLAN_MODES)}")
    if cfg.window not in PLAN_WINDOWS:
        raise TrajplanError(
            f"unknown plan window {cfg.window!r}: use one of {', '.join(PLAN_WINDOWS)}"
        )
    if not 0.0 < cfg.discount <= 1.0:
        raise TrajplanError(f"plan.discount must be in (0, 1], got {cfg.discount}")
    if not 0.0 < cfg.prior_share <= 1.0:
        raise TrajplanError(f"plan.prior_share must be in (0, 1], got {cfg.prior_share}")
    if not (math.isfinite(cfg.prior_noise) and cfg.prior_noise >= 0):
        raise TrajplanError(f"plan.prior_noise must be >= 0, got {cfg.prior_noise}")
    if cfg.objective not in PLAN_OBJECTIVES:
        raise TrajplanError(
            f"plan.objective must be one of {', '.join(PLAN_OBJECTIVES)}, got {cfg.objective!r}"
        )
    if cfg.objective == "likelihood" and cfg.critic:
        raise TrajplanError(
            "plan.objective likelihood ranks plans by the model's likelihood alone: it takes "
            "no plan.critic (drop the critic, or use objective return)"
        )
    for name in ("cdf_obs", "cdf_act"):
        p = getattr(cfg, name)
        if p is not None and not 0.0 < p <= 1.0:
            raise TrajplanError(f"plan.{name} must be in (0, 1] or none, got {p}")


def check_run_config(cfg: RunConfig) -> None:
    """Every section's values, before any work (dims are checked against the data apart)."""
    check_data_config(cfg.data)
    check_model_config(cfg.model)
    check_train_config(cfg.train)
    check_plan_config(cfg.plan)
