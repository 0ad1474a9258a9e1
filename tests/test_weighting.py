"""Action-token weights: exp(beta * z) of the standardised return-to-go
(trajplan.data.weighting)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trajplan.config import DataConfig
from trajplan.data.weighting import CLIP, action_weights, returns_to_go


def rows(r: list[float], v: list[float]) -> np.ndarray:
    """Transition rows [obs (1), act (1), r, V]."""
    n = len(r)
    return np.stack([np.zeros(n), np.zeros(n), r, v], axis=1).astype(np.float32)


def test_weights_by_hand() -> None:
    tr = rows([1.0, 0.0, -1.0, 0.0], [0.0, 10.0, 0.0, -10.0])
    g = returns_to_go(tr, 0.5)
    np.testing.assert_allclose(g, [1.0, 5.0, -1.0, -5.0])
    z = (g - g.mean()) / g.std()
    w = np.exp(2.0 * z)
    np.testing.assert_allclose(action_weights(tr, 2.0, 0.5), w / w.mean(), rtol=1e-6)
    assert action_weights(tr, 2.0, 0.5).dtype == np.float32


def test_weights_clip_z_and_are_neutral_without_beta_or_spread() -> None:
    tr = rows([0.0] * 99 + [1000.0], [0.0] * 100)  # one outlier: z about 9.9, clipped to 3
    w = action_weights(tr, 1.0, 0.99)
    g = returns_to_go(tr, 0.99)
    z = np.clip((g - g.mean()) / g.std(), -CLIP, CLIP)
    assert z[-1] == CLIP
    np.testing.assert_allclose(w, np.exp(z) / np.exp(z).mean(), rtol=1e-6)
    np.testing.assert_array_equal(action_weights(tr, 0.0, 0.99), np.ones(100))
    np.testing.assert_array_equal(action_weights(rows([1.0] * 5, [2.0] * 5), 3.0, 0.9), np.ones(5))


def test_weights_reach_the_action_tokens_of_the_windows(minari_datasets) -> None:
    """With data.action_weighting the windows' loss mask weights the action tokens by the
    step's weight and leaves observations, rewards and values at 1."""
    from trajplan.data.transitions import load_episodes, make_transitions, prepare_episodes

    ep = load_episodes(minari_datasets.hopper)
    cfg = DataConfig(seq_len=3, n_bins=10, action_weighting=1.0)
    plain = prepare_episodes(ep, DataConfig(seq_len=3, n_bins=10))
    weighted = prepare_episodes(ep, cfg)
    _, _, m_plain = plain.windows.get_batch(torch.arange(8))
    _, _, m_w = weighted.windows.get_batch(torch.arange(8))
    D = ep.obs_dim + ep.act_dim + 2
    dims = (torch.arange(m_w.shape[1]) + 1) % D  # the dimension each target token holds
    act = (dims >= ep.obs_dim) & (dims < ep.obs_dim + ep.act_dim)
    assert torch.equal(m_w[:, ~act], m_plain[:, ~act])
    assert not torch.equal(m_w[:, act], m_plain[:, act])
    w = action_weights(make_transitions(ep, cfg), 1.0, cfg.discount)
    assert float(m_w[:, act][m_plain[:, act] > 0].min()) >= float(w.min()) - 1e-6
    assert float(m_w[:, act].max()) <= float(w.max()) + 1e-6
    assert w.mean() == pytest.approx(1.0, rel=1e-5)
