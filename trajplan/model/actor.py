"""Exported actors: deterministic MLP policies in one small safetensors file each.

An *exported actor* has hidden layers with an activation, a linear head `mu`, a tanh squash
and an affine map from [-1, 1] to the env's action box (the deterministic action of a SAC
or TD3 actor). Its metadata says which env it was trained on, its dimensions and its measured
return. Running one needs only numpy: stable-baselines3 is needed to *train* and export
(scripts/train_behavior.py, `actor_from_sb3`), never to load (`load_actor`). trajplan ships
actors for some envs (`builtin_actor`); BC runs save theirs in this format too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from trajplan.envs.registry import resolve_env
from trajplan.errors import TrajplanError
from trajplan.runtime import atomic_write, read_tagged_safetensors

ACTOR_FORMAT = "trajplan-actor/1"
ACTOR_SUFFIX = ".actor.safetensors"
POLICY_FILE = "policy" + ACTOR_SUFFIX  # a run's own policy (a BC run; a prior names its run)
LEVELS = ("medium", "expert")

_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}
# torch.nn class name -> our activation name (for exporting from stable-baselines3)
_TORCH_ACTIVATIONS = {
    "ReLU": "relu",
    "Tanh": "tanh",
    "ELU": "elu",
    "LeakyReLU": "leaky_relu",
    "SiLU": "silu",
}


@dataclass
class Actor:
    """A deterministic tanh-squashed MLP policy (float32 numpy weights)."""

    weights: list[np.ndarray]  # hidden layers then mu, each [out, in]
    biases: list[np.ndarray]  # each [out]
    activation: str
    action_low: np.ndarray  # [a]
    action_high: np.ndarray  # [a]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.activation not in _ACTIVATIONS:
            raise TrajplanError(
                f"actor activation {self.activation!r} is not supported: "
                f"use one of {', '.join(_ACTIVATIONS)}"
            )
        if len(self.weights) != len(self.biases) or not self.weights:
            raise TrajplanError("actor needs one bias per weight matrix and at least one layer")
        for w_in, w_out in zip(self.weights[1:], self.weights[:-1], strict=True):
            if w_in.shape[1] != w_out.shape[0]:
                raise TrajplanError(f"actor layers do not chain: {w_out.shape} -> {w_in.shape}")
        if self.action_low.shape != (self.act_dim,) or self.action_high.shape != (self.act_dim,):
            raise TrajplanError("actor action bounds do not match its output size")

    @property
    def obs_dim(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.weights[-1].shape[0])

    @property
    def hidden_sizes(self) -> list[int]:
        return [int(w.shape[0]) for w in self.weights[:-1]]

    @property
    def env_id(self) -> str | None:
        return self.meta.get("env_id")

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions: obs [B, o] -> [B, a], or [o] -> [a]."""
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        x = x[None] if single else x  # [B, o]
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise TrajplanError(
                f"actor expects observations of {self.obs_dim} dims, got shape {np.shape(obs)}"
            )
        f = _ACTIVATIONS[self.activation]
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            x = f(_rowwise(x, w) + b)  # [B, hidden]
        squashed = np.tanh(_rowwise(x, self.weights[-1]) + self.biases[-1])  # [B, a] in [-1, 1]
        act = self.action_low + 0.5 * (squashed + 1.0) * (self.action_high - self.action_low)
        act = np.clip(act, self.action_low, self.action_high)
        return act[0] if single else act


def _rowwise(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T ([B, i] -> [B, o]) one row at a time, so that a row's result never depends on
    the batch: BLAS picks its float32 kernels by the batch size (OpenBLAS's sgemm rounds
    batches of 2 or 3 rows differently from 1 or 4), and an episode's actions would then
    depend on how many episodes share its batch (`eval --workers`)."""
    return (x[:, None, :] @ w.T)[:, 0, :]


def actor_from_sb3(model: Any, meta: dict[str, Any] | None = None) -> Actor:
    """Export the deterministic actor of a stable-baselines3 SAC or TD3 model (no sb3 import).

    SAC: rescale(tanh(mu(latent_pi(flatten(obs))))); TD3: rescale(mu(flatten(obs))) where
    `mu` is a Sequential MLP ending in Tanh. Both become tanh(MLP(obs)) rescaled to the box.
    """
    actor = model.policy.actor
    if getattr(actor, "use_sde", False):
        raise TrajplanError("exporting a gSDE actor is not supported (train with use_sde=False)")
    if hasattr(actor, "latent_pi"):  # SAC: hidden layers, then a linear head `mu`
        if not hasattr(actor.mu, "weight"):
            raise TrajplanError("actor head `mu` is not a single linear layer: cannot export")
        modules, algorithm = [*actor.latent_pi, actor.mu], "sac"
    else:  # TD3 / DDPG: one Sequential whose last module is the Tanh squash
        modules, algorithm = list(actor.mu), "td3"
        if not modules or type(modules[-1]).__name__ != "Tanh":
            raise TrajplanError("TD3 actor does not end in Tanh: cannot export")
        modules = modules[:-1]
    linears = [m for m in modules if hasattr(m, "weight")]
    acts = {type(m).__name__ for m in modules if not hasattr(m, "weight")}
    if len(acts) > 1 or (acts and next(iter(acts)) not in _TORCH_ACTIVATIONS):
        raise TrajplanError(f"cannot export actor with activations {sorted(acts)}")
    activation = _TORCH_ACTIVATIONS[next(iter(acts))] if acts else "relu"
    space = model.action_space
    meta = dict(meta or {})
    meta.setdefault("algorithm", algorithm)
    return Actor(
        weights=[m.weight.detach().cpu().numpy().astype(np.float32) for m in linears],
        biases=[m.bias.detach().cpu().numpy().astype(np.float32) for m in linears],
        activation=activation,
        action_low=np.asarray(space.low, dtype=np.float32),
        action_high=np.asarray(space.high, dtype=np.float32),
        meta=meta,
    )


def save_actor(actor: Actor, path: str | Path) -> Path:
    """Write an actor to a safetensors file (temporary name, then renamed)."""
    from safetensors.numpy import save_file

    tensors = {"action_low": actor.action_low, "action_high": actor.action_high}
    for i, (w, b) in enumerate(zip(actor.weights, actor.biases, strict=True)):
        tensors[f"layers.{i}.weight"] = np.ascontiguousarray(w, dtype=np.float32)
        tensors[f"layers.{i}.bias"] = np.ascontiguousarray(b, dtype=np.float32)
    meta = {
        **actor.meta,
        "obs_dim": actor.obs_dim,
        "act_dim": actor.act_dim,
        "hidden_sizes": actor.hidden_sizes,
        "activation": actor.activation,
    }
    header = {"format": ACTOR_FORMAT, "meta": json.dumps(meta, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def load_actor(path: str | Path) -> Actor:
    """Read an exported actor; a missing, foreign or corrupt file is a TrajplanError."""
    meta, tensors = read_tagged_safetensors(path, ACTOR_FORMAT, "actor")
    try:
        n = sum(1 for k in tensors if k.endswith(".weight"))
        weights = [tensors[f"layers.{i}.weight"] for i in range(n)]
        biases = [tensors[f"layers.{i}.bias"] for i in range(n)]
        low, high = tensors["action_low"], tensors["action_high"]
    except KeyError as exc:
        raise TrajplanError(f"{path} is a damaged trajplan actor (missing {exc})") from None
    return Actor(weights, biases, meta.get("activation", "relu"), low, high, meta)


def builtin_actor(env_name: str, level: str = "medium") -> Path:
    """Path of the actor shipped with trajplan for an env (short name) and level."""

    name = resolve_env(env_name).name
    assets = resources.files("trajplan") / "assets"
    path = Path(str(assets / f"{name}-{level}{ACTOR_SUFFIX}"))
    if not path.is_file():
        have = (
            sorted(
                p.name.removesuffix(ACTOR_SUFFIX)
                for p in Path(str(assets)).glob(f"*{ACTOR_SUFFIX}")
            )
            if Path(str(assets)).is_dir()
            else []
        )
        raise TrajplanError(
            f"no built-in {level!r} actor for {name}: built-in actors are "
            f"{', '.join(have) or 'none'}; pass a path to an exported actor instead"
        )
    return path


class BatchedActor:
    """An exported actor (a BC policy, a SAC actor) for E episodes in lockstep: the batched
    interface of `trajplan.planner.Planner` that `trajplan.envs.rollout.rollout` drives.

    noise > 0: Gaussian noise of `noise` times each action's half range is added, clipped to
    the bounds, as a prior's noisy candidates get in the planner (`plan.prior_noise`); each
    episode draws it from its own generator, seeded with the episode's seed.
    """

    def __init__(self, actor: Actor, noise: float = 0.0) -> None:
        if not (np.isfinite(noise) and noise >= 0):
            raise TrajplanError(f"action noise must be >= 0, got {noise}")
        self.actor, self.noise = actor, float(noise)
        self.low = np.asarray(actor.action_low, dtype=np.float64)
        self.high = np.asarray(actor.action_high, dtype=np.float64)
        self.generators: list[np.random.Generator] = []

    @property
    def n_envs(self) -> int:
        return len(self.generators)

    def reset(self, n_envs: int, seeds: Any = None) -> None:
        seeds = range(n_envs) if seeds is None else seeds
        self.generators = [np.random.default_rng(int(s)) for s in seeds]

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Observations [E, o] -> actions [E, a] (float64)."""
        act = self.actor.act(obs).astype(np.float64)
        if self.noise > 0:
            eps = np.stack([g.standard_normal(act.shape[1]) for g in self.generators])  # [E, a]
            half = 0.5 * (self.high - self.low)
            act = np.clip(act + self.noise * half * eps, self.low, self.high)
        return act

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        pass

    def drop(self, keep: np.ndarray) -> None:
        self.generators = [g for g, k in zip(self.generators, keep, strict=True) if k]
