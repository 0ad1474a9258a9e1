"""Minari episodes as flat arrays over all steps (docs/method.md, Data).

    Episodes        observations, actions, rewards, terminations, truncations of every step,
                    episode starts and lengths, env id and reference scores
    load_episodes   a local Minari dataset (or 'a+b': their union) -> Episodes
    split_episodes  whole episodes held out for validation

Reading goes through `trajplan.data.store` (open, iterate, env id); turning episodes into
training windows is `trajplan.data.transitions`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from trajplan.data.install import download_dataset
from trajplan.data.store import (
    box_dims,
    env_id_of,
    is_stored,
    iter_episodes,
    open_dataset,
    registry_info,
    split_dataset_ids,
)
from trajplan.envs.references import reference_scores
from trajplan.errors import TrajplanError


@dataclass
class Episodes:
    """Flat arrays over all steps of all episodes (episode i is rows starts[i]:+lengths[i])."""

    observations: np.ndarray  # [n, o] float32 (each episode's final next-observation apart)
    actions: np.ndarray  # [n, a] float32
    rewards: np.ndarray  # [n] float32 raw env rewards
    terminations: np.ndarray  # [n] bool
    truncations: np.ndarray  # [n] bool
    starts: np.ndarray  # [n_episodes] int64
    lengths: np.ndarray  # [n_episodes] int64
    dataset_id: str
    env_id: str | None = None  # Gymnasium id from the dataset's env spec
    ref_min: float | None = None
    ref_max: float | None = None
    ref_source: str | None = None  # "dataset metadata" | "D4RL constants (...)" | None
    # [n_episodes, o] float32: the observation after each episode's last step (what a
    # truncated last step bootstraps from, e.g. IQL's TD target); None when not known
    final_observations: np.ndarray | None = None

    @property
    def n_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def n_episodes(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def returns(self) -> np.ndarray:
        """[n_episodes] undiscounted raw returns."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.starts)

    def subset(self, keep: np.ndarray) -> Episodes:
        """The episodes where keep [n_episodes] is true, in order, as a new Episodes."""
        steps = np.repeat(keep, self.lengths)  # [n] bool
        lengths = self.lengths[keep]
        final = self.final_observations
        return dataclasses.replace(
            self,
            final_observations=None if final is None else final[keep],
            observations=self.observations[steps],
            actions=self.actions[steps],
            rewards=self.rewards[steps],
            terminations=self.terminations[steps],
            truncations=self.truncations[steps],
            starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            lengths=lengths,
        )

    def validate(self) -> Episodes:
        """Consistent shapes, contiguous episodes, finite values; else a one-line error."""
        n = self.rewards.shape[0]
        if n == 0 or self.lengths.size == 0:
            raise TrajplanError(f"dataset {self.dataset_id!r} has no steps")
        for name in ("observations", "actions"):
            arr = getattr(self, name)
            if arr.ndim != 2 or arr.shape[0] != n:
                raise TrajplanError(f"{name} must have shape [{n}, dim], got {arr.shape}")
        for name in ("terminations", "truncations"):
            if getattr(self, name).shape != (n,):
                raise TrajplanError(f"{name} must have shape [{n}]")
        final = self.final_observations
        if final is not None and final.shape != (self.lengths.size, self.observations.shape[1]):
            raise TrajplanError(f"final_observations must have shape [{self.lengths.size}, o]")
        if final is not None and not np.isfinite(final).all():
            raise TrajplanError(f"dataset {self.dataset_id!r}: observations contain NaN or inf")
        if (
            (self.lengths < 1).any()
            or self.lengths.sum() != n
            or not np.array_equal(self.starts, np.concatenate([[0], np.cumsum(self.lengths)[:-1]]))
        ):
            raise TrajplanError("episode starts/lengths do not tile the steps contiguously")
        for name in ("observations", "actions", "rewards"):
            if not np.isfinite(getattr(self, name)).all():
                raise TrajplanError(f"dataset {self.dataset_id!r}: {name} contain NaN or inf")
        return self


def _read_minari(dataset_id: str, download: bool) -> dict:
    """One Minari dataset -> flat float32 arrays + lengths + metadata."""
    if download and not is_stored(dataset_id):
        download_dataset(dataset_id)
    ds = open_dataset(dataset_id)
    o, a = box_dims(ds)
    keys = ("obs", "act", "rew", "term", "trunc", "final")
    pieces: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    lengths = []
    for i, ep in enumerate(iter_episodes(ds)):  # per-episode work is whole-array numpy
        t = len(ep["rewards"])
        if t == 0:
            continue  # an empty episode contributes nothing
        obs = ep["observations"].reshape(len(ep["observations"]), -1)
        act = ep["actions"].reshape(len(ep["actions"]), -1)
        if obs.shape != (t + 1, o) or act.shape != (t, a):
            raise TrajplanError(
                f"dataset {dataset_id!r} episode {i}: observations {obs.shape} / actions "
                f"{act.shape} do not match {t} steps of dims {o}/{a}"
            )
        pieces["obs"].append(obs[:t].astype(np.float32))
        pieces["final"].append(obs[t:].astype(np.float32))  # [1, o]
        pieces["act"].append(act.astype(np.float32))
        pieces["rew"].append(ep["rewards"].astype(np.float32).reshape(t))
        pieces["term"].append(ep["terminations"].astype(bool).reshape(t))
        pieces["trunc"].append(ep["truncations"].astype(bool).reshape(t))
        lengths.append(t)
    if not lengths:
        raise TrajplanError(f"dataset {dataset_id!r} is empty (no steps)")
    out = {k: np.concatenate(v) for k, v in pieces.items()}
    out["lengths"] = np.asarray(lengths, dtype=np.int64)
    out["obs_dim"], out["act_dim"] = o, a
    out["env_id"] = env_id_of(ds)
    out["metadata"] = dict(ds.storage.metadata)
    return out


def load_episodes(dataset_id: str, download: bool = False, obs_keep: int | None = None) -> Episodes:
    """Read a local Minari dataset (or 'a+b': their episodes concatenated) into flat arrays.

    `download=True` fetches missing datasets from Minari's remote. `obs_keep` keeps the first
    obs_keep observation dims; None uses the env registry's default (Ant: 27 of 105), 0 keeps
    all. Reference scores come from the dataset metadata when every part has the same pair,
    else from the registry's D4RL constants (`ref_source` says which).
    """
    ids = split_dataset_ids(dataset_id)
    parts = [_read_minari(i, download) for i in ids]
    dims = {(p["obs_dim"], p["act_dim"]) for p in parts}
    if len(dims) > 1:
        shown = ", ".join(
            f"{i}: obs {p['obs_dim']} act {p['act_dim']}" for i, p in zip(ids, parts, strict=True)
        )
        raise TrajplanError(f"cannot combine datasets with different dimensions ({shown})")
    env_ids = {p["env_id"] for p in parts} - {None}
    if len(env_ids) > 1:
        raise TrajplanError(f"cannot combine datasets of different envs: {sorted(env_ids)}")
    env_id = env_ids.pop() if env_ids else None

    keys = ("obs", "act", "rew", "term", "trunc", "final")
    cat = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    lengths = np.concatenate([p["lengths"] for p in parts])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

    info = registry_info(env_id, dataset_id)
    keep = obs_keep if obs_keep is not None else (info.obs_keep if info is not None else None)
    obs, final = cat["obs"], cat["final"]
    if keep:
        if obs_keep is not None and keep > obs.shape[1]:
            raise TrajplanError(f"obs_keep={keep} but observations have {obs.shape[1]} dims")
        obs = np.ascontiguousarray(obs[:, :keep])
        final = np.ascontiguousarray(final[:, :keep])

    refs = {(p["metadata"].get("ref_min_score"), p["metadata"].get("ref_max_score")) for p in parts}
    meta = {}
    if len(refs) == 1:  # every part carries the same pair (or none)
        meta["ref_min_score"], meta["ref_max_score"] = refs.pop()
    lo, hi, src = reference_scores(meta, info)
    return Episodes(
        observations=obs,
        actions=cat["act"],
        rewards=cat["rew"],
        terminations=cat["term"],
        truncations=cat["trunc"],
        starts=starts,
        lengths=lengths,
        dataset_id=dataset_id,
        env_id=env_id,
        ref_min=lo,
        ref_max=hi,
        ref_source=src,
        final_observations=final,
    ).validate()


SPLIT_SEED = 0  # the seed of TT's validation split (trajplan.data.transitions.prepare_episodes)


def split_episodes(ep: Episodes, val_fraction: float, seed: int = 0) -> tuple[Episodes, Episodes]:
    """Hold out round(val_fraction * n) whole episodes (at least one, chosen by `seed`)."""
    n = ep.n_episodes
    n_val = max(1, round(val_fraction * n))
    if n_val >= n:
        raise TrajplanError(
            f"data.val_fraction {val_fraction} leaves no training episodes ({n} in the dataset)"
        )
    val = np.zeros(n, dtype=bool)
    val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return ep.subset(~val), ep.subset(val)


def data_fingerprint(episodes: Episodes) -> str:
    """sha256 over the loaded episodes (every array, with its dtype and shape): a changed
    dataset (re-collected, other seed or size) gets another fingerprint."""
    h = hashlib.sha256()
    for name in ("observations", "actions", "rewards", "terminations", "truncations", "lengths"):
        arr = np.ascontiguousarray(getattr(episodes, name))
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.data)
    return "sha256:" + h.hexdigest()
