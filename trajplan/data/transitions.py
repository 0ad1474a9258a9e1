"""Minari episodes -> transitions -> tokenized training windows (docs/method.md, Data).

    load_episodes   flat arrays over all steps of all episodes (trajplan.data.episodes)
    make_transitions  [obs, act, r (termination penalty), V (discounted reward-to-go)]
    Discretizer.fit   per-dimension bins (trajplan.data.tokens); with data.exact_bins the
                    values that bins would merge (a sparse reward's 0 and 1) keep bins of their own
    WindowDataset   windows of L transitions, stop-token padding, loss mask, batched gather

`prepare(dataset_id, cfg)` runs the whole chain. Reading episodes lives in `trajplan.data.episodes`;
writing, listing, describing and downloading datasets in `trajplan.data.store`; both are
re-exported here, so that `trajplan.data.transitions` is the one import for data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from trajplan.config import DataConfig, check_data_config
from trajplan.data.bins_report import ColumnCheck, check_columns
from trajplan.data.episodes import Episodes, load_episodes, split_episodes
from trajplan.data.hindsight import attach_goals, drop_env_goal, env_goal_dims
from trajplan.data.install import create_dataset, download_dataset
from trajplan.data.store import dataset_info, local_datasets
from trajplan.data.tokens import Discretizer
from trajplan.data.weighting import action_weights
from trajplan.errors import TrajplanError

__all__ = [
    "Episodes",
    "PreparedData",
    "WindowDataset",
    "check_bins",
    "column_names",
    "create_dataset",
    "dataset_info",
    "download_dataset",
    "load_episodes",
    "local_datasets",
    "make_transitions",
    "penalized_rewards",
    "prepare",
    "prepare_episodes",
    "split_episodes",
    "value_targets",
]


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
        self.goals: torch.Tensor | None = None  # [W, g] goal tokens (trajplan.data.hindsight)

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

    def set_action_weights(self, action_weights: np.ndarray, act_slice: slice) -> None:
        """Per-step loss weights [n_steps] for the action tokens of each step (see
        `trajplan.data.weighting`); stop rows keep weight 1. Applied by `get_batch`."""
        per_row = torch.ones(self.tokens.shape[0], dtype=torch.float32)
        is_step = (self.tokens[:, 0] != self.stop_token).cpu()  # stop rows are all stop tokens
        per_row[is_step] = torch.as_tensor(action_weights, dtype=torch.float32)
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

    def goal_batch(self, idx: torch.Tensor) -> torch.Tensor | None:
        """Window indices [B] -> their goal tokens [B, g] long (None: no goals)."""
        if self.goals is None:
            return None
        return self.goals[torch.as_tensor(idx, device=self.goals.device)].long()

    def to(self, device: str | torch.device) -> WindowDataset:
        """Move the token storage to `device`, so batches are gathered there."""
        self.tokens = self.tokens.to(device)
        if self.goals is not None:
            self.goals = self.goals.to(device)
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
    columns: list[ColumnCheck] = dataclasses.field(default_factory=list)  # how the bins keep each


def column_names(obs_dim: int, act_dim: int) -> list[str]:
    """The names of a transition's D columns: obs[i], act[i], reward, value."""
    return (
        [f"obs[{i}]" for i in range(obs_dim)]
        + [f"act[{i}]" for i in range(act_dim)]
        + [
            "reward",
            "value",
        ]
    )


def _fit_bins(ep: Episodes, transitions: np.ndarray, cfg: DataConfig) -> Discretizer:
    """Bins for every column, with exact bins where `data.exact_bins` asks for them."""
    return Discretizer.fit(transitions, cfg.n_bins, cfg.discretizer, cfg.exact_bins)


def _windows(ep: Episodes, transitions: np.ndarray, disc: Discretizer, cfg: DataConfig):
    windows = WindowDataset.from_step_tokens(
        disc.discretize(transitions), ep.lengths, cfg.seq_len, cfg.max_path_length, disc.stop_token
    )
    acts = slice(ep.obs_dim, ep.obs_dim + ep.act_dim)
    if cfg.action_weighting > 0:
        w = action_weights(transitions, cfg.action_weighting, cfg.discount)
        windows.set_action_weights(w, acts)
    if cfg.goal_dims is not None:  # goal-conditioned: hindsight goals per window
        attach_goals(windows, ep, disc, cfg)
    return windows


def prepare_episodes(
    ep: Episodes, cfg: DataConfig, discretizer: Discretizer | None = None
) -> PreparedData:
    """Transitions, fitted discretizer and tokenized windows from in-memory episodes.

    The discretizer is fitted on all transitions (or given: a resumed run keeps its bins);
    with `val_fraction` > 0 whole episodes are held out of the training windows into
    `val_windows` (unweighted). With `goal_dims` (goal-conditioned), a goal env's own goal
    dims are dropped from the observations first and every window gets a hindsight goal
    (trajplan.data.hindsight).
    """
    check_data_config(cfg)
    ep.validate()
    if cfg.goal_dims is not None and env_goal_dims(ep):
        ep = drop_env_goal(ep, env_goal_dims(ep))
    transitions = make_transitions(ep, cfg)  # [n, D]
    disc = discretizer or _fit_bins(ep, transitions, cfg)
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
        columns=check_columns(disc, transitions, column_names(ep.obs_dim, ep.act_dim)),
    )


def check_bins(ep: Episodes, cfg: DataConfig) -> list[ColumnCheck]:
    """How the bins `cfg` fits on these episodes keep each column (`trajplan data info`)."""
    check_data_config(cfg)
    transitions = make_transitions(ep, cfg)  # [n, D]
    disc = _fit_bins(ep, transitions, cfg)
    return check_columns(disc, transitions, column_names(ep.obs_dim, ep.act_dim))


def prepare(
    dataset_id: str, cfg: DataConfig, download: bool = False, obs_keep: int | None = None
) -> PreparedData:
    """Load a Minari dataset and turn it into training windows (see `load_episodes`)."""
    return prepare_episodes(load_episodes(dataset_id, download=download, obs_keep=obs_keep), cfg)
