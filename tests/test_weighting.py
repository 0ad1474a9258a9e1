"""Action-token weights: the dataset-mean and the fitted-state baselines (trajplan.weighting)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trajplan.config import DataConfig
from trajplan.episodes import Episodes
from trajplan.errors import TrajplanError
from trajplan.weighting import action_weights, advantage_weights, truncated_tail


def episodes(lengths: list[int], terminated: list[bool], obs: np.ndarray, act: np.ndarray,
             rewards: np.ndarray) -> Episodes:  # fmt: skip
    lengths_a = np.array(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths_a)[:-1]]).astype(np.int64)
    term = np.zeros(int(lengths_a.sum()), dtype=bool)
    trunc = np.zeros_like(term)
    for s, n, t in zip(starts, lengths_a, terminated, strict=True):
        (term if t else trunc)[s + n - 1] = True
    ep = Episodes(obs.astype(np.float32), act.astype(np.float32), rewards.astype(np.float32),
                  term, trunc, starts, lengths_a, "test/synthetic-v0")  # fmt: skip
    return ep.validate()


def test_truncated_tail_marks_only_the_end_of_time_limited_episodes() -> None:
    n = 4 + 3 + 5
    ep = episodes([4, 3, 5], [False, True, False], np.zeros((n, 1)), np.zeros((n, 1)),
                  np.zeros(n))  # fmt: skip
    tail = truncated_tail(ep, horizon=2)
    expected = [0, 0, 1, 1] + [0, 0, 0] + [0, 0, 0, 1, 1]
    np.testing.assert_array_equal(tail, np.array(expected, dtype=bool))
    assert not truncated_tail(ep, horizon=0).any()


def test_state_baseline_weights_the_action_not_the_state() -> None:
    """g = 10 * s + (+1 for action 1, -1 for action 0): the mean baseline mostly follows the
    state, the fitted-state baseline follows the action."""
    rng = np.random.default_rng(0)
    n = 4000
    s = rng.uniform(0, 1, (n, 2))
    act = rng.integers(0, 2, (n, 1)).astype(np.float64)
    r = 10 * s[:, 0] + (2 * act[:, 0] - 1)
    ep = episodes([1] * n, [True] * n, s, act, r)  # one-step episodes: g = r exactly
    tr = np.concatenate([s, act, r[:, None], np.zeros((n, 1))], axis=1).astype(np.float32)
    w_mean = action_weights(tr, 1.0, 0.99)
    w_state = advantage_weights(ep, tr, 1.0, 0.99)
    assert w_state.mean() == pytest.approx(1.0, rel=1e-5)
    assert np.corrcoef(w_mean, s[:, 0])[0, 1] > 0.8
    assert np.corrcoef(w_state, act[:, 0])[0, 1] > 0.8
    assert abs(np.corrcoef(w_state, s[:, 0])[0, 1]) < 0.15
    # the advantage of +-1 is small next to g's spread (std ~3): mild weights
    ratio = w_state[act[:, 0] == 1].mean() / w_state[act[:, 0] == 0].mean()
    assert 1.5 < ratio < np.exp(2 * 1.0 / r.std()) * 1.3
    np.testing.assert_array_equal(w_state, advantage_weights(ep, tr, 1.0, 0.99))  # seeded
    np.testing.assert_array_equal(advantage_weights(ep, tr, 0.0, 0.99), np.ones(n))


def test_state_baseline_leaves_the_truncated_tail_neutral() -> None:
    """The last 1/(1-gamma) steps of a time-limited episode weigh the same (z = 0) under the
    state baseline, while the mean baseline ranks them by their cut-off return-to-go."""
    from trajplan.data import make_transitions

    rng = np.random.default_rng(1)
    L = 30
    obs = rng.normal(size=(2 * L, 3))
    ep = episodes([L, L], [False, True], obs, np.zeros((2 * L, 1)), np.ones(2 * L))
    tr = make_transitions(ep, DataConfig(termination_penalty=-100.0, discount=0.9))
    w = advantage_weights(ep, tr, 2.0, 0.9)  # horizon 1 / (1 - 0.9) = 10 steps
    np.testing.assert_array_equal(w[L - 10 : L], np.full(10, w[L - 1]))
    assert len(np.unique(w[: L - 10])) > 1  # the rest is measured against V(s)
    w_mean = action_weights(tr, 2.0, 0.9)
    assert np.all(np.diff(w_mean[L - 10 : L]) < 0)  # mean baseline: the cut looks poor


def test_weighting_baseline_is_checked_and_used(minari_datasets) -> None:
    from trajplan.data import load_episodes, prepare_episodes

    with pytest.raises(TrajplanError, match="weighting_baseline must be one of mean, state"):
        prepare_episodes(load_episodes(minari_datasets.hopper),
                         DataConfig(action_weighting=1.0, weighting_baseline="median"))  # fmt: skip
    ep = load_episodes(minari_datasets.hopper)
    cfg = DataConfig(seq_len=3, n_bins=10, action_weighting=1.0)
    by_mean = prepare_episodes(ep, cfg)
    by_state = prepare_episodes(ep, DataConfig(**{**cfg.__dict__, "weighting_baseline": "state"}))
    _, _, m_mean = by_mean.windows.get_batch(torch.arange(8))
    _, _, m_state = by_state.windows.get_batch(torch.arange(8))
    assert not np.allclose(m_mean.numpy(), m_state.numpy())
