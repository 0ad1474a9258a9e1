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


def test_advantage_weights_by_hand() -> None:
    """exp(beta * adv) clipped at 100 (IQL's max weight), then normalised to mean 1."""
    from trajplan.data.weighting import MAX_WEIGHT, advantage_weights

    adv = np.array([0.0, 1.0, -1.0, 10.0])
    raw = np.array([1.0, np.e, 1 / np.e, MAX_WEIGHT])  # e^10 > 100: clipped
    np.testing.assert_allclose(advantage_weights(adv, 1.0), raw / raw.mean(), rtol=1e-6)
    np.testing.assert_array_equal(advantage_weights(adv, 0.0), np.ones(4, np.float32))


def test_critic_weighting_trains_with_the_critics_weights(minari_datasets, tmp_path) -> None:
    """data.critic_weighting: a real IQL run's critic weights each step's action tokens by
    exp(beta (Q - V)) (in the critic's training units); training records the critic's
    absolute path (given relative to where it runs) and, by default, the IQL run's own
    temperature as beta; the config rules are one line each."""
    import os

    from conftest import cli, one_line_error

    from trajplan.baselines.iql import IQLConfig, train_iql
    from trajplan.configs import load_config
    from trajplan.data.transitions import load_episodes, prepare_episodes
    from trajplan.data.weighting import advantage_weights, critic_advantages
    from trajplan.errors import TrajplanError
    from trajplan.runs import load_critic
    from trajplan.runs.checkpoint import read_manifest

    iql = tmp_path / "iql"
    train_iql(minari_datasets.hopper, iql, IQLConfig(steps=20, batch_size=32, hidden=[16, 16]),
              progress=False)  # fmt: skip
    critic = load_critic(iql, "hopper")
    ep = load_episodes(minari_datasets.hopper)
    cfg = DataConfig(seq_len=3, n_bins=10, critic_weighting=str(iql), critic_beta=2.0)
    data = prepare_episodes(ep, cfg, critic=critic)
    w = advantage_weights(critic_advantages(critic, ep.observations, ep.actions), 2.0)
    assert w.std() > 0 and w.mean() == pytest.approx(1.0, rel=1e-5)
    _, _, mask = data.windows.get_batch(torch.arange(len(data.windows)))
    D = ep.obs_dim + ep.act_dim + 2
    first_act = ep.obs_dim - 1  # target position of step 0's first action token
    step = ep.starts[data.windows.episode_index] + data.windows.t_start.numpy()
    np.testing.assert_allclose(mask[:, first_act].numpy(), w[step], rtol=1e-6)
    assert (mask[:, D - 1 : D + ep.obs_dim - 1] == 1).all()  # step 1's observation: unweighted
    _, _, unweighted = prepare_episodes(ep, cfg).windows.get_batch(torch.arange(4))
    assert (unweighted <= 1).all()  # re-read without its critic (analysis): unweighted
    with pytest.raises(TrajplanError, match="only with data.critic_weighting"):
        prepare_episodes(ep, DataConfig(seq_len=3, n_bins=10), critic=critic)
    for bad, words in (
        (dict(action_weighting=1.0), "replaces data.action_weighting"),
        (dict(goal_dims="0,1"), "does not combine with a goal"),
        (dict(critic_beta=-1.0), "critic_beta must be >= 0"),
    ):
        with pytest.raises(TrajplanError, match=words):
            prepare_episodes(ep, DataConfig(critic_weighting=str(iql), **bad), critic=critic)
    with pytest.raises(TrajplanError, match="temperature"):
        prepare_episodes(ep, DataConfig(critic_weighting=str(iql)), critic=critic)

    run = tmp_path / "tt"
    args = ["train", "--config", "tiny", "--dataset", minari_datasets.hopper, "--threads", "1",
            "--set", "data.action_weighting=2", "--critic", str(iql.relative_to(tmp_path)),
            "--no-progress", "--max-steps", "6", "--out", str(run)]  # fmt: skip
    here = os.getcwd()
    os.chdir(tmp_path)  # a relative critic path, resolved where the command runs
    try:
        cli(*args)
    finally:
        os.chdir(here)
    saved = read_manifest(run)[0]  # --critic replaced the return weighting
    assert saved.data.critic_weighting == str(iql.resolve()) and saved.data.action_weighting == 0
    assert saved.data.critic_beta == 3.0  # the IQL run's temperature (locomotion preset)
    both = ["--set", f"data.critic_weighting={iql}", "--set", "data.action_weighting=2"]
    one_line_error(cli(*args[:7], *both, "--out", str(tmp_path / "t2"), code=2),
                   "critic_weighting")  # fmt: skip
    assert load_config("tiny").data.critic_weighting is None
