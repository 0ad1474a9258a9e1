"""`trajplan data collect` / `from-replay`: real rollouts written as real Minari datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import cli, one_line_error, tiny_model

from trajplan.behaviour.collect import collect, from_replay, record_episodes
from trajplan.behaviour.policies import RandomPolicy
from trajplan.envs.registry import make_env
from trajplan.errors import TrajplanError
from trajplan.model.actor import Actor, save_actor


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def leftovers(root) -> list[str]:
    """Anything but finished datasets under the Minari root (staging dirs, temp files)."""
    return [p.name for p in root.rglob("*") if "tmp" in p.name or "trajplan-old" in p.name]


def tiny_actor(obs_dim: int, act_dim: int, env_id: str) -> Actor:
    rng = np.random.default_rng(1)
    w = [rng.normal(0, 0.5, (16, obs_dim)), rng.normal(0, 0.5, (act_dim, 16))]
    b = [np.zeros(16), rng.normal(0, 0.1, act_dim)]
    low, high = -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32)
    meta = {"env_id": env_id, "level": "tiny"}
    return Actor(
        [x.astype(np.float32) for x in w],
        [x.astype(np.float32) for x in b],
        "tanh",
        low,
        high,
        meta,
    )


def test_collect_random_cli_writes_a_minari_dataset_with_metadata(minari_root):
    import minari

    cli(
        "data",
        "collect",
        "--env",
        "hopper",
        "--policy",
        "random",
        "--steps",
        "120",
        "--dataset-id",
        "test/hopper/random-v0",
        "--seed",
        "7",
        "--max-episode-steps",
        "25",
    )
    ds = minari.load_dataset("test/hopper/random-v0")
    meta = ds.storage.metadata
    assert meta["algorithm_name"] == "random"
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (-20.272305, 3234.3)
    assert (
        ds.spec.env_spec.id == "Hopper-v5"
        and ds.recover_environment(eval_env=True).spec.id == "Hopper-v5"
    )
    assert ds.total_steps == 120 and "random policy in Hopper-v5" in meta["description"]
    episodes = list(ds.iterate_episodes())
    assert all(len(ep.actions) <= 25 for ep in episodes)
    assert episodes[-1].truncations[-1]  # cut at exactly --steps
    for ep in episodes:  # every episode ends, and only at its last step
        ends = ep.terminations | ep.truncations
        assert ends[-1] and not ends[:-1].any()
    # episode i was reset with seed 7 + i: its first observation is the env's reset obs
    env = make_env("hopper")
    for i in (0, len(episodes) - 1):
        np.testing.assert_array_equal(episodes[i].observations[0], env.reset(seed=7 + i)[0])

    from trajplan.config import DataConfig
    from trajplan.data.transitions import load_episodes, prepare

    flat = load_episodes("test/hopper/random-v0")
    assert flat.n_steps == 120 and flat.n_episodes == len(episodes)
    assert flat.ref_source == "dataset metadata: D4RL constants (approximate for v5 envs)"
    prep = prepare("test/hopper/random-v0", DataConfig(n_bins=20, seq_len=4))
    assert prep.transition_dim == 11 + 3 + 2


def test_collect_with_actor_file_records_the_actor_actions(tmp_path):
    import minari

    actor = tiny_actor(11, 3, "Hopper-v5")
    path = save_actor(actor, tmp_path / "tiny.actor.safetensors")
    cli(
        "data",
        "collect",
        "--env",
        "Hopper-v5",
        "--policy",
        str(path),
        "--steps",
        "60",
        "--dataset-id",
        "test/hopper/tiny-v0",
        "--max-episode-steps",
        "30",
    )
    ds = minari.load_dataset("test/hopper/tiny-v0")
    assert ds.storage.metadata["algorithm_name"] == "sac-tiny"
    for ep in ds.iterate_episodes():  # the recorded actions are the actor's, obs by obs
        np.testing.assert_allclose(ep.actions, actor.act(ep.observations[:-1]), atol=1e-6)


@pytest.mark.parametrize("env", ["halfcheetah", "hopper", "walker2d"])
def test_collect_with_the_builtin_medium_actor(env: str):
    """Every env of the offline set has a bundled medium actor that moves forward and stays
    up for the first 50 steps (Hopper and Walker2d end an episode when they fall)."""
    from trajplan.data.transitions import load_episodes

    collect(env, "medium", 50, f"test/{env}/medium-v0", max_episode_steps=50, progress=False)
    ep = load_episodes(f"test/{env}/medium-v0")
    assert ep.n_episodes == 1 and ep.n_steps == 50
    assert ep.rewards.sum() > 0


def test_same_seed_same_dataset_other_seed_differs():
    from trajplan.data.transitions import load_episodes

    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        collect(
            "hopper",
            "random",
            80,
            f"test/hopper/{name}-v0",
            seed=seed,
            max_episode_steps=30,
            progress=False,
        )
    a, b, c = (load_episodes(f"test/hopper/{n}-v0") for n in "abc")
    for key in ("observations", "actions", "rewards", "terminations", "truncations", "lengths"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.actions, c.actions)


def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, minari_root):
    base = ["data", "collect", "--env", "hopper", "--steps", "20", "--max-episode-steps", "10"]
    x = ("--dataset-id", "test/hopper/x-v0")
    one_line_error(cli(*base, "--policy", "greedy", *x, code=2), "unknown policy 'greedy'")

    cheetah = save_actor(tiny_actor(17, 6, "HalfCheetah-v5"), tmp_path / "hc.actor.safetensors")
    one_line_error(cli(*base, "--policy", str(cheetah), *x, code=2), "17/6", "11/3")
    assert not (minari_root / "test/hopper/x-v0").exists()

    cli(*base, "--policy", "random", *x)
    first = load_actions("test/hopper/x-v0")
    again = cli(*base, "--policy", "random", *x, "--seed", "9", code=2)
    assert "already exists" in again.stderr and "--force" in again.stderr
    np.testing.assert_array_equal(load_actions("test/hopper/x-v0"), first)  # untouched
    cli(*base, "--policy", "random", *x, "--seed", "9", "--force")
    assert not np.array_equal(load_actions("test/hopper/x-v0"), first)
    assert leftovers(minari_root) == []


def load_actions(dataset_id: str) -> np.ndarray:
    from trajplan.data.transitions import load_episodes

    return load_episodes(dataset_id).actions


class InterruptedPolicy(RandomPolicy):
    """A random policy whose user presses Ctrl-C after `after` steps."""

    def __init__(self, space, after: int) -> None:
        super().__init__(space)
        self.left = after

    def act(self, obs):
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt
        return super().act(obs)


def test_interrupted_collection_leaves_no_dataset(minari_root):
    policy = InterruptedPolicy(make_env("hopper").action_space, after=15)
    with pytest.raises(KeyboardInterrupt):
        collect("hopper", policy, 40, "test/hopper/cut-v0", max_episode_steps=10, progress=False)
    assert not (minari_root / "test/hopper/cut-v0").exists()
    assert not minari_root.exists() or leftovers(minari_root) == []


def test_from_replay_round_trips_episodes(tmp_path):
    from trajplan.data.transitions import load_episodes

    env = make_env("hopper")
    episodes, _ = record_episodes(
        "hopper", RandomPolicy(env.action_space), 70, seed=2, max_episode_steps=20, progress=False
    )
    # the layout train_behavior.py writes: consecutive transitions, next obs beside obs
    cat = {
        k: np.concatenate([ep[k] for ep in episodes])
        for k in ("actions", "rewards", "terminations", "truncations")
    }
    replay = tmp_path / "replay.npz"
    np.savez(
        replay,
        observations=np.concatenate([ep["observations"][:-1] for ep in episodes]),
        next_observations=np.concatenate([ep["observations"][1:] for ep in episodes]),
        **cat,
    )
    from_replay("hopper", replay, "test/hopper/replay-v0")
    got = load_episodes("test/hopper/replay-v0")
    np.testing.assert_array_equal(got.lengths, [len(ep["actions"]) for ep in episodes])
    np.testing.assert_allclose(got.actions, cat["actions"])
    np.testing.assert_allclose(
        got.observations, np.concatenate([ep["observations"][:-1] for ep in episodes])
    )
    # only the episodes within the first 45 steps
    from_replay("hopper", replay, "test/hopper/replay-cut-v0", max_steps=45)
    assert load_episodes("test/hopper/replay-cut-v0").n_steps <= 45
    with pytest.raises(TrajplanError, match="not found"):
        from_replay("hopper", tmp_path / "none.npz", "test/hopper/replay-x-v0")


def test_planner_policy_and_run_dir_collect_reproducibly(one_thread, tmp_path):
    """An untrained tiny TT model plans; a run directory of it is a --policy too."""
    from trajplan.config import PlanConfig, RunConfig
    from trajplan.data.tokens import Discretizer
    from trajplan.data.transitions import load_episodes
    from trajplan.runs import load_run
    from trajplan.runs.checkpoint import save_checkpoint

    o, a, n_bins = 11, 3, 10
    model = tiny_model(obs_dim=o, act_dim=a, vocab_size=n_bins, transitions=4, n_layer=1)
    disc = Discretizer.fit(np.random.default_rng(0).uniform(-1, 1, (500, o + a + 2)), n_bins)
    plan_cfg = PlanConfig(horizon=2, beam_width=4, max_context_transitions=2)
    run = tmp_path / "run"
    cfg = RunConfig(env="hopper", dataset="test/hopper/p-v0", model=model.cfg, plan=plan_cfg)
    save_checkpoint(run, model, cfg, {"env": "hopper", "dataset_id": "test/hopper/p-v0"}, disc)
    policy = load_run(run, device="cpu").agent("hopper")  # the run's planner, one episode
    assert policy.name == "trajplan-planner"
    collect("hopper", policy, 12, "test/hopper/p-v0", seed=1, max_episode_steps=6, progress=False)
    p = load_episodes("test/hopper/p-v0")
    assert p.n_episodes == 2 and p.n_steps == 12
    mids = disc.midpoints()[:, o : o + a]  # [N, a]: the planner acts with bin midpoints
    assert all(np.isin(p.actions[:, j], mids[:, j].astype(np.float32)).all() for j in range(a))

    base = ["data", "collect", "--steps", "12", "--max-episode-steps", "6", "--seed", "1"]
    cli(*base, "--env", "hopper", "--policy", str(run), "--dataset-id", "test/hopper/q-v0")
    q = load_episodes("test/hopper/q-v0")
    np.testing.assert_array_equal(p.actions, q.actions)  # same planner, same seeds
    np.testing.assert_array_equal(p.observations, q.observations)
    other = ("--env", "halfcheetah", "--policy", str(run), "--dataset-id", "test/halfcheetah/q-v0")
    one_line_error(cli(*base, *other, code=2), "trained on hopper")


def test_staging_of_a_killed_collect_is_removed(tmp_path: Path) -> None:
    """kill -9 of `data collect` while it writes leaves its hidden staging folder; `data
    list` never reports it, the next collection removes it (its writer's lock is gone), and
    a staging folder in use by a live writer stays. Ctrl-C says that no dataset was written."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "minari"
    env = dict(os.environ, MINARI_DATASETS_PATH=str(root), OMP_NUM_THREADS="1")
    args = ["data", "collect", "--env", "halfcheetah", "--policy", "random"]

    def spawn(*extra: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "trajplan", *args, *extra]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip

    proc = spawn("--steps", "20000", "--dataset-id", "local/halfcheetah/killed-v0")
    deadline = time.monotonic() + 300
    while not list(root.glob(".trajplan-tmp-*")):  # its staging folder: it writes now
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.002)
    proc.kill()
    proc.communicate()
    stale = list(root.glob(".trajplan-tmp-*"))
    assert stale  # what kill -9 leaves
    listing = cli("data", "list", process=True, env={"MINARI_DATASETS_PATH": str(root)})
    assert ".trajplan-tmp" not in listing.stdout + listing.stderr
    holder = (  # a writer alive in its own staging folder
        "import sys, time\nfrom trajplan.data.install import _staging_root\n"
        "with _staging_root() as tmp:\n    print(tmp, flush=True)\n    time.sleep(300)\n"
    )
    live = subprocess.Popen([sys.executable, "-c", holder], env=env, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    in_use = Path(live.stdout.readline().strip())
    try:
        cli(*args, "--steps", "50", "--dataset-id", "local/halfcheetah/next-v0", process=True,
            env={"MINARI_DATASETS_PATH": str(root)})  # fmt: skip
        assert not any(p.exists() for p in stale) and in_use.is_dir()
    finally:
        live.kill()
        live.communicate()
    proc = spawn("--steps", "200000", "--dataset-id", "local/halfcheetah/stopped-v0")
    assert "collect random" in proc.stdout.readline()  # it has begun
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "stopped: no dataset written" in err, err
    assert not (root / "local/halfcheetah/stopped-v0").exists()
