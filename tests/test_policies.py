"""Exported actors: SB3 equivalence, file round trips, built-in assets and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from trajplan.behaviour.policies import ActorPolicy, RandomPolicy, make_policy
from trajplan.envs.registry import make_env
from trajplan.errors import TrajplanError
from trajplan.model.actor import Actor, actor_from_sb3, builtin_actor, load_actor, save_actor


def tiny_actor(obs_dim: int, act_dim: int, seed: int = 0, env_id: str | None = None) -> Actor:
    rng = np.random.default_rng(seed)
    sizes = [obs_dim, 8, 8, act_dim]
    weights = [
        rng.normal(0, 0.5, (o, i)).astype(np.float32)
        for i, o in zip(sizes, sizes[1:], strict=False)
    ]
    biases = [rng.normal(0, 0.1, o).astype(np.float32) for o in sizes[1:]]
    low, high = -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32)
    return Actor(weights, biases, "relu", low, high, {"env_id": env_id})


@pytest.mark.parametrize(("env_id", "activation"), [("Pendulum-v1", "ReLU"), ("Hopper-v5", "Tanh")])
def test_exported_actor_matches_sb3_deterministic_actions(tmp_path, env_id, activation):
    sb3 = pytest.importorskip("stable_baselines3", reason="needs the sb3 extra to build a SAC")
    import torch

    env = make_env(env_id, seed=0)
    kwargs = {"net_arch": [32, 16], "activation_fn": getattr(torch.nn, activation)}
    model = sb3.SAC("MlpPolicy", env, policy_kwargs=kwargs, seed=1, device="cpu")
    with torch.no_grad():  # untrained weights are near zero: make the squash matter
        for p in model.policy.actor.parameters():
            p.mul_(4.0)
    actor = load_actor(save_actor(actor_from_sb3(model, {"env_id": env_id}), tmp_path / "a.st"))
    obs = np.random.default_rng(0).normal(0, 2, (64, *env.observation_space.shape))  # [64, o]
    expected, _ = model.predict(obs, deterministic=True)
    got = actor.act(obs)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)  # float32 sums differ in order
    # Pendulum's box is [-2, 2]: the rescale is exercised, and saturated actions reach it
    assert np.abs(got).max() > 0.5 * env.action_space.high.max()
    np.testing.assert_allclose(actor.act(obs[3]), expected[3], atol=1e-4)  # single obs [o]
    assert actor.hidden_sizes == [32, 16]
    assert actor.activation == activation.lower()


def test_save_load_round_trip_keeps_weights_and_metadata(tmp_path):
    actor = tiny_actor(11, 3, env_id="Hopper-v5")
    actor.action_low[:] = [-1, -2, -0.5]
    actor.meta.update(mean_return=1234.5, level="medium")
    loaded = load_actor(save_actor(actor, tmp_path / "x.actor.safetensors"))
    assert (loaded.obs_dim, loaded.act_dim, loaded.env_id) == (11, 3, "Hopper-v5")
    assert loaded.meta["mean_return"] == 1234.5 and loaded.meta["level"] == "medium"
    obs = np.random.default_rng(0).normal(size=(5, 11))
    np.testing.assert_array_equal(loaded.act(obs), actor.act(obs))
    acts = loaded.act(obs * 100)  # saturated: exactly the box corners
    assert np.all((acts >= actor.action_low) & (acts <= actor.action_high))
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left


def test_load_actor_errors(tmp_path):
    from safetensors.numpy import save_file

    with pytest.raises(TrajplanError, match="not found"):
        load_actor(tmp_path / "missing.actor.safetensors")
    bad = tmp_path / "bad.actor.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(TrajplanError, match="not a readable safetensors"):
        load_actor(bad)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(foreign))
    with pytest.raises(TrajplanError, match="not a trajplan actor"):
        load_actor(foreign)
    with pytest.raises(TrajplanError, match="observations of 11 dims"):
        tiny_actor(11, 3).act(np.zeros(17))


# Measured returns of the shipped actors (random: HalfCheetah ~-280, Hopper ~18, Walker2d
# ~0); the TD3 hopper (80k steps) and walker2d (180k) actors are medium-level, see metadata.
@pytest.mark.parametrize(
    ("env", "dims", "min_return"),
    [("halfcheetah", (17, 6), 4000), ("hopper", (11, 3), 1000), ("walker2d", (17, 6), 1400)],
)
def test_builtin_medium_actors_ship_with_the_package(env, dims, min_return):
    actor = load_actor(builtin_actor(env, "medium"))
    assert (actor.obs_dim, actor.act_dim) == dims
    assert actor.meta["level"] == "medium" and actor.meta["env_name"] == env
    assert actor.meta["mean_return"] > min_return
    with pytest.raises(TrajplanError, match="no built-in 'novice' actor"):
        builtin_actor(env, "novice")


def test_make_policy_kinds_and_errors(tmp_path):
    env = make_env("hopper")
    assert isinstance(make_policy("random", "hopper", env), RandomPolicy)
    policy = make_policy("medium", "hopper", env)
    assert isinstance(policy, ActorPolicy) and policy.name == "td3-medium"
    with pytest.raises(TrajplanError, match="unknown policy 'greedy'"):
        make_policy("greedy", "hopper", env)
    # an exported actor keeps the name it was exported with (an IQL run's actor is "iql",
    # never "sac-iql"); one without a name is "actor", or algorithm-level where both are known
    named = {"iql": {"algorithm_name": "iql", "level": "iql"}, "actor": {},
             "td3-expert": {"algorithm": "td3 (stable-baselines3)", "level": "expert"}}  # fmt: skip
    for want, meta in named.items():
        actor = tiny_actor(11, 3, env_id="Hopper-v5")
        actor.meta.update(meta)
        path = save_actor(actor, tmp_path / f"{want}.actor.safetensors")
        assert make_policy(str(path), "hopper", env).name == want
    path = save_actor(tiny_actor(17, 6, env_id="HalfCheetah-v5"), tmp_path / "hc.actor.safetensors")
    with pytest.raises(TrajplanError, match=r"HalfCheetah-v5\) has obs/act dims 17/6.*11/3"):
        make_policy(str(path), "hopper", env)
    with pytest.raises(TrajplanError, match="not found"):
        make_policy(str(tmp_path / "nope.actor.safetensors"), "hopper", env)


def test_random_policy_is_reproducible_per_episode_seed():
    env = make_env("halfcheetah")
    policy = RandomPolicy(env.action_space)
    policy.reset(5)
    first = np.stack([policy.act(None) for _ in range(4)])
    policy.reset(5)
    again = np.stack([policy.act(None) for _ in range(4)])
    policy.reset(6)
    other = np.stack([policy.act(None) for _ in range(4)])
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_batched_actor_noise_is_seeded_per_episode_and_clipped():
    """noise 0: the actor's own actions; noise > 0: the actor's action plus noise * half
    range * N(0, 1) from the episode's own seed (batched == alone, the same seed the same
    draws), clipped to the bounds; negative noise is a clear error."""
    from trajplan.model.actor import BatchedActor

    actor = tiny_actor(5, 3)
    obs = np.random.default_rng(1).normal(size=(2, 5))  # [E, o]
    plain = BatchedActor(actor)
    plain.reset(2, [7, 8])
    assert np.array_equal(plain.act(obs), actor.act(obs).astype(np.float64))
    noisy = BatchedActor(actor, noise=0.2)
    noisy.reset(2, [7, 8])
    got = noisy.act(obs)
    eps = np.random.default_rng(8).standard_normal(3)
    want = np.clip(actor.act(obs[1:]).astype(np.float64)[0] + 0.2 * eps, -1.0, 1.0)
    assert np.allclose(got[1], want, atol=1e-12)
    noisy.drop(np.array([False, True]))  # episode 7 ended: 8 keeps its own stream
    alone = BatchedActor(actor, noise=0.2)
    alone.reset(1, [8])
    alone.act(obs[1:])
    assert np.array_equal(noisy.act(obs[1:]), alone.act(obs[1:])) and noisy.n_envs == 1
    loud = BatchedActor(actor, noise=50.0)
    loud.reset(2, [0, 1])
    assert np.abs(loud.act(obs)).max() == 1.0  # clipped to the action box
    with pytest.raises(TrajplanError, match="action noise must be >= 0"):
        BatchedActor(actor, noise=-0.1)
