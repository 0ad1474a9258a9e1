"""Held-out start states for open-loop prediction (docs/method.md, Long-horizon prediction).

    split_held_out  the training and held-out episodes of a dataset: the same whole-episode
                    split as TT training (`data.val_fraction`, split seed 0)
    pick_starts     S start steps (episode, t) in the held-out episodes with H recorded
                    steps after them, and everything a rollout and its score need

The reference ("the simulator") is the dataset itself: its recorded next observations are
what the simulator produced from the same state under the same actions, so they need no
replay (exact, and independent of the x position that Gymnasium v5 observations leave out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajplan.data.episodes import SPLIT_SEED, Episodes, split_episodes
from trajplan.errors import TrajplanError


@dataclass
class Starts:
    """S start states with the data's next H steps."""

    obs: np.ndarray  # [S, o] float32 the state s_t
    actions: np.ndarray  # [S, H, a] float32 the data's actions a_t .. a_{t+H-1}
    truth: np.ndarray  # [S, H, o] float32 the recorded states s_{t+1} .. s_{t+H}
    rewards: np.ndarray  # [S, H] float32 the recorded rewards r_t .. r_{t+H-1}
    episode: np.ndarray  # [S] int64 index of the episode among the held-out episodes
    t: np.ndarray  # [S] int64 time index of s_t in its episode

    @property
    def n(self) -> int:
        return int(self.obs.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[1])


def split_held_out(
    episodes: Episodes, val_fraction: float, split_seed: int = SPLIT_SEED
) -> tuple[Episodes, Episodes]:
    """(training, held-out) episodes: `split_episodes` with TT's seed; a fraction of 0 (the
    run trained on every episode) is a one-line error."""
    if not 0 < val_fraction < 1:
        raise TrajplanError(
            f"data.val_fraction is {val_fraction}: the run trained on every episode of "
            f"{episodes.dataset_id}, so none is held out; give --dataset ID with episodes it "
            "did not see (e.g. trajplan data collect ... --seed 1000)"
        )
    return split_episodes(episodes, val_fraction, split_seed)


def pick_starts(ep: Episodes, horizon: int, n_starts: int, seed: int = 0) -> Starts:
    """`n_starts` distinct steps t (fewer when fewer exist) of episodes in `ep` with
    t + horizon < the episode's length, drawn by `seed`, in (episode, t) order."""
    if horizon < 1 or n_starts < 1:
        raise TrajplanError(f"--horizon and --starts must be at least 1, got {horizon}, {n_starts}")
    room = ep.lengths - horizon  # [E] start steps per episode (t = 0 .. len - 1 - H)
    longest = int(ep.lengths.max())
    if longest < 2:  # "--horizon 0 at most" named a value refused above
        raise TrajplanError(
            f"every held-out episode of {ep.dataset_id} has {longest} step: nothing to "
            "predict from (a start and one step after it at least); give --dataset with "
            "longer episodes"
        )
    if room.max() < 1:
        raise TrajplanError(
            f"--horizon {horizon} is longer than every held-out episode of {ep.dataset_id} allows "
            f"({ep.n_episodes} episodes, the longest has {int(ep.lengths.max())} steps: "
            f"--horizon {int(ep.lengths.max()) - 1} at most)"
        )
    room = np.maximum(room, 0)
    first = np.concatenate([[0], np.cumsum(room)[:-1]])  # [E] candidate index of (e, 0)
    total = int(room.sum())
    pick = np.sort(np.random.default_rng(seed).choice(total, min(n_starts, total), replace=False))
    episode = np.searchsorted(first, pick, side="right") - 1  # [S]
    t = pick - first[episode]  # [S]
    rows = ep.starts[episode] + t  # [S] flat row of s_t
    steps = rows[:, None] + np.arange(horizon)  # [S, H] rows of t .. t+H-1
    return Starts(
        obs=ep.observations[rows],
        actions=ep.actions[steps],
        truth=ep.observations[steps + 1],
        rewards=ep.rewards[steps],
        episode=episode.astype(np.int64),
        t=t.astype(np.int64),
    )


def one_step_pairs(ep: Episodes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(s [n, o], a [n, a], s' [n, o], r [n]) of every step with a recorded next state in its
    episode (the last step of each episode has none here)."""
    last = ep.starts + ep.lengths - 1
    keep = np.ones(ep.n_steps, dtype=bool)
    keep[last] = False
    rows = np.flatnonzero(keep)
    return ep.observations[rows], ep.actions[rows], ep.observations[rows + 1], ep.rewards[rows]
