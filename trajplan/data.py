"""Minari episodes -> transitions -> tokenized training windows (docs/method.md, Data).

    load_episodes   flat arrays over all steps of all episodes (+ env id, reference scores)
    make_transitions  [obs, act, r (termination penalty), V (discounted reward-to-go)]
    Discretizer.fit   per-dimension bins (trajplan.tokens)
    WindowDataset   windows of L transitions, stop-token padding, loss mask, batched gather

`prepare(dataset_id, cfg)` runs the whole chain. Writing, listing, describing and downloading
datasets lives in `trajplan.datasets` and is re-exported here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from trajplan.config import DataConfig
from trajplan.datasets import (
    box_dims,
    create_dataset,
    dataset_info,
    download_dataset,
    env_id_of,
    iter_episodes,
    local_datasets,
    open_dataset,
    registry_info,
    split_dataset_ids,
)
from trajplan.errors import TrajplanError
from trajplan.scores import reference_scores
from trajplan.tokens import Discretizer

__all__ = [
    "Episodes",
    "PreparedData",
    "WindowDataset",
    "create_dataset",
    "dataset_info",
    "download_dataset",
    "load_episodes",
    "local_datasets",
    "make_transitions",
    "penalized_rewards",
    "prepare",
    "prepare_episodes",
    "value_targets",
]


# -- episodes ---------------------------------------------------------------------------------


@dataclass
class Episodes:
    """Flat arrays over all steps of all episodes (episode i is rows starts[i]:+lengths[i])."""

    observations: np.ndarray  # [n, o] float32 (each episode's final next-observation dropped)
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
        return dataclasses.replace(
            self,
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
    ds = open_dataset(dataset_id, download=download)
    o, a = box_dims(ds)
    pieces: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "rew", "term", "trunc")}
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

    cat = {k: np.concatenate([p[k] for p in parts]) for k in ("obs", "act", "rew", "term", "trunc")}
    lengths = np.concatenate([p["lengths"] for p in parts])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

    info = registry_info(env_id, dataset_id)
    keep = obs_keep if obs_keep is not None else (info.obs_keep if info is not None else None)
    obs = cat["obs"]
    if keep:
        if obs_keep is not None and keep > obs.shape[1]:
            raise TrajplanError(f"obs_keep={keep} but observations have {obs.shape[1]} dims")
        obs = np.ascontiguousarray(obs[:, :keep])

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
    ).validate()


# -- transitions ------------------------------------------------------------------------------


def penalized_rewards(
    rewards: np.ndarray, terminations: np.ndarray, penalty: float | None
) -> np.ndarray:
    """Rewards with every true termination's reward replaced by `penalty` (None: unchanged)."""
    out = np.array(rewards, dtype=np.float32, copy=True)
    if penalty is not None:
        out[np.asarray(terminations, dtype=bool)] = penalty
    return out


def value_targets(
    rewards: np.ndarray, starts: np.ndarray, lengths: np.ndarray, discount: float
) -> np.ndarray:
    """V_t = sum_{k>=1} gamma^(k-1) r_{t+k} inside each episode (0 at its last step).

    A reverse scan over the time index, all episodes at once: with episodes sorted by length,
    those still running at time k are a prefix, so each of the max_len iterations is one
    vectorized update `V[t] = r[t+1] + gamma * V[t+1]`. float64 result [n].
    """
    r = np.asarray(rewards, dtype=np.float64)
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    values = np.zeros(r.shape[0], dtype=np.float64)
    if lengths.size == 0:
        return values
    order = np.argsort(-lengths, kind="stable")
    s, neg_len = starts[order], -lengths[order]  # neg_len ascending
    max_len = int(lengths.max())
    ks = np.arange(max_len - 1)
    # episodes with a step k+1, i.e. length >= k+2: a prefix of the sorted order
    n_active = np.searchsorted(neg_len, -(ks + 2), side="right")
    for k in range(max_len - 2, -1, -1):
        idx = s[: n_active[k]] + k  # [n_active] flat index of step k
        values[idx] = r[idx + 1] + discount * values[idx + 1]
    return values


def make_transitions(ep: Episodes, cfg: DataConfig) -> np.ndarray:
    """[n, o + a + 2] float32 rows [obs, act, r (penalised), V] (V computed after the penalty)."""
    r = penalized_rewards(ep.rewards, ep.terminations, cfg.termination_penalty)
    v = value_targets(r, ep.starts, ep.lengths, cfg.discount)
    o, a = ep.obs_dim, ep.act_dim
    out = np.empty((ep.n_steps, o + a + 2), dtype=np.float32)
    out[:, :o] = ep.observations
    out[:, o : o + a] = ep.actions
    out[:, o + a] = r
    out[:, o + a + 1] = v
    return out


def action_weights(transitions: np.ndarray, beta: float, discount: float) -> np.ndarray:
    """[n] weights for the action tokens of each step: exp(beta * z), mean 1.

    Not in the reference. z is the step's discounted return-to-go `r_t + gamma * V_t`
    (penalised reward plus value target, so what the model itself learns to predict),
    standardised over the dataset and clipped to [-3, 3]. With beta > 0 the model's action
    distribution leans towards what the better stretches of the data did (the idea of
    advantage-weighted regression, with the dataset mean as baseline), so the planner's
    candidate actions are better on mixed-quality data; observations, rewards and values
    are still learned from all data unweighted. beta = 0 gives weight 1 everywhere.
    """
    g = transitions[:, -2].astype(np.float64) + discount * transitions[:, -1]
    if beta == 0.0 or g.std() == 0.0:
        return np.ones(len(g), dtype=np.float32)
    z = np.clip((g - g.mean()) / g.std(), -3.0, 3.0)
    w = np.exp(beta * z)
    return (w / w.mean()).astype(np.float32)


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


# -- training windows -------------------------------------------------------------------------


class WindowDataset:
    """All training windows of L transitions, stored once and gathered per batch.

    docs/method.md, Data.

    Storage: the step tokens of every episode followed by L-1 rows of stop tokens, flat
    [n_steps + n_episodes * (L-1), D] int16 (int32 if N > 32767). A window is a row offset
    plus the time index of its first step; windows start at every step 0..len-2 of every
    episode, so a window never reaches past its own episode's stop rows. The loss mask is a
    function of the time index only: 0 where it exceeds max_path_length - 1.
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        row_start: torch.Tensor,
        t_start: torch.Tensor,
        seq_len: int,
        max_path_length: int,
        stop_token: int,
    ) -> None:
        self.tokens = tokens  # [rows, D] int16
        self.row_start = row_start  # [W] int64
        self.t_start = t_start  # [W] int64
        self.seq_len = int(seq_len)
        self.transition_dim = int(tokens.shape[1])
        self.block_size = self.seq_len * self.transition_dim - 1
        self.n_windows = int(row_start.shape[0])
        self.max_path_length = int(max_path_length)
        self.stop_token = int(stop_token)
        self._steps = torch.arange(self.seq_len, device=tokens.device)  # [L]
        self.episode_index: np.ndarray | None = None  # [W] episode of each window (numpy)
        self.row_weights: torch.Tensor | None = None  # [rows] action-token weights, optional
        self.act_slice = slice(0, 0)

    @classmethod
    def from_step_tokens(
        cls,
        step_tokens: np.ndarray,
        lengths: np.ndarray,
        seq_len: int,
        max_path_length: int,
        stop_token: int,
    ) -> WindowDataset:
        """Build from per-step tokens [n, D] of contiguous episodes with the given lengths."""
        n, d = step_tokens.shape
        lengths = np.asarray(lengths, dtype=np.int64)
        n_ep, pad = lengths.size, seq_len - 1
        dtype = np.int16 if stop_token <= np.iinfo(np.int16).max else np.int32
        ep_of_step = np.repeat(np.arange(n_ep), lengths)  # [n]
        rows = np.full((n + n_ep * pad, d), stop_token, dtype=dtype)
        rows[np.arange(n) + ep_of_step * pad] = step_tokens  # episode e shifted by e*(L-1)

        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        per_ep = np.maximum(lengths - 1, 0)  # windows start at steps 0..len-2
        ep_of_win = np.repeat(np.arange(n_ep), per_ep)  # [W]
        first_win = np.concatenate([[0], np.cumsum(per_ep)[:-1]])
        t_start = np.arange(per_ep.sum()) - first_win[ep_of_win]  # [W] time index of step 0
        row_start = starts[ep_of_win] + ep_of_win * pad + t_start
        ds = cls(
            torch.from_numpy(rows),
            torch.from_numpy(row_start.astype(np.int64)),
            torch.from_numpy(t_start.astype(np.int64)),
            seq_len,
            max_path_length,
            stop_token,
        )
        ds.episode_index = ep_of_win  # [W] numpy, for inspection and tests
        return ds

    def __len__(self) -> int:
        return self.n_windows

    def set_action_weights(self, step_weights: np.ndarray, act_slice: slice) -> None:
        """Per-step loss weights [n_steps] for the action tokens of each step (see
        `action_weights`); stop rows keep weight 1. Applied by `get_batch`."""
        per_row = torch.ones(self.tokens.shape[0], dtype=torch.float32)
        is_step = (self.tokens[:, 0] != self.stop_token).cpu()  # stop rows are all stop tokens
        per_row[is_step] = torch.as_tensor(step_weights, dtype=torch.float32)
        self.row_weights = per_row.to(self.tokens.device)  # [rows]
        self.act_slice = act_slice

    def get_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Window indices [B] -> x [B, block] long, y [B, block] long, mask [B, block] float32.

        The mask follows the *input* token (time index past max_path_length - 1: 0); with
        action weights it is also multiplied by the weight of every *target* action token.
        """
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.row_start.device)
        b, L, d = idx.shape[0], self.seq_len, self.transition_dim
        rows = self.row_start[idx, None] + self._steps  # [B, L]
        tok = self.tokens[rows].long().reshape(b, L * d)  # [B, L*D]
        time = self.t_start[idx, None] + self._steps  # [B, L]
        keep = time <= self.max_path_length - 1  # [B, L]
        mask = keep[:, :, None].expand(b, L, d).reshape(b, L * d).to(torch.float32)  # [B, L*D]
        x = tok[:, :-1].contiguous()
        y = tok[:, 1:].contiguous()
        mask = mask[:, :-1]
        if self.row_weights is not None:
            w = torch.ones(b, L, d, device=mask.device)
            w[:, :, self.act_slice] = self.row_weights[rows][:, :, None]  # [B, L, a]
            mask = mask * w.reshape(b, L * d)[:, 1:]  # weight of the target token
        return x, y, mask

    def to(self, device: str | torch.device) -> WindowDataset:
        """Move the token storage to `device`, so batches are gathered there."""
        self.tokens = self.tokens.to(device)
        self.row_start = self.row_start.to(device)
        self.t_start = self.t_start.to(device)
        self._steps = self._steps.to(device)
        if self.row_weights is not None:
            self.row_weights = self.row_weights.to(device)
        return self


# -- the whole chain --------------------------------------------------------------------------


@dataclass
class PreparedData:
    """Everything training needs from a dataset."""

    episodes: Episodes
    transitions: np.ndarray  # [n, D] float32
    discretizer: Discretizer
    windows: WindowDataset
    obs_dim: int
    act_dim: int
    transition_dim: int
    val_windows: WindowDataset | None = None  # held-out episodes (data.val_fraction > 0)


def _check_config(cfg: DataConfig) -> None:
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
    if not (np.isfinite(cfg.action_weighting) and cfg.action_weighting >= 0.0):
        raise TrajplanError(f"data.action_weighting must be >= 0, got {cfg.action_weighting}")


def _windows(ep: Episodes, transitions: np.ndarray, disc: Discretizer, cfg: DataConfig):
    windows = WindowDataset.from_step_tokens(
        disc.discretize(transitions), ep.lengths, cfg.seq_len, cfg.max_path_length, disc.stop_token
    )
    if cfg.action_weighting > 0:
        w = action_weights(transitions, cfg.action_weighting, cfg.discount)
        windows.set_action_weights(w, slice(ep.obs_dim, ep.obs_dim + ep.act_dim))
    return windows


def prepare_episodes(
    ep: Episodes, cfg: DataConfig, discretizer: Discretizer | None = None
) -> PreparedData:
    """Transitions, fitted discretizer and tokenized windows from in-memory episodes.

    The discretizer is fitted on all transitions (or given: a resumed run keeps its bins);
    with `val_fraction` > 0 whole episodes are held out of the training windows into
    `val_windows` (unweighted).
    """
    _check_config(cfg)
    ep.validate()
    transitions = make_transitions(ep, cfg)  # [n, D]
    disc = discretizer or Discretizer.fit(transitions, cfg.n_bins, cfg.discretizer)
    if disc.dim != transitions.shape[1]:
        raise TrajplanError(
            f"dataset {ep.dataset_id!r}: {transitions.shape[1]} dims per transition, the given "
            f"bins have {disc.dim}"
        )
    train_ep, val_windows = ep, None
    if cfg.val_fraction > 0:
        train_ep, val_ep = split_episodes(ep, cfg.val_fraction)
        val_cfg = dataclasses.replace(cfg, action_weighting=0.0)
        val_windows = _windows(val_ep, make_transitions(val_ep, cfg), disc, val_cfg)
    windows = _windows(train_ep, make_transitions(train_ep, cfg), disc, cfg)
    if windows.n_windows == 0:
        raise TrajplanError(f"dataset {ep.dataset_id!r}: no training windows (all episodes 1 step)")
    return PreparedData(
        episodes=ep,
        transitions=transitions,
        discretizer=disc,
        windows=windows,
        obs_dim=ep.obs_dim,
        act_dim=ep.act_dim,
        transition_dim=transitions.shape[1],
        val_windows=val_windows,
    )


def prepare(
    dataset_id: str, cfg: DataConfig, download: bool = False, obs_keep: int | None = None
) -> PreparedData:
    """Load a Minari dataset and turn it into training windows (see `load_episodes`)."""
    return prepare_episodes(load_episodes(dataset_id, download=download, obs_keep=obs_keep), cfg)
