"""Goal mazes (issue 22): Gymnasium-Robotics' PointMaze and AntMaze through the one env factory,
the waypoint controller, maze datasets collected as D4RL's maze2d, success rates in eval.

Real envs and real Minari datasets in a temporary MINARI_DATASETS_PATH of this module."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
from conftest import cli, one_line_error
from minari.data_collector import EpisodeBuffer

from trajplan.behaviour.collect import collect
from trajplan.behaviour.policies import play_policy
from trajplan.behaviour.waypoint import WaypointPolicy
from trajplan.config import DataConfig
from trajplan.data.store import dataset_info
from trajplan.data.transitions import load_episodes, prepare_episodes
from trajplan.envs.mazes import SUCCESS_RADIUS, drop_model_file, require_robotics
from trajplan.envs.references import references_for
from trajplan.envs.registry import REGISTRY, make_env, resolve_env
from trajplan.evaluation.evalfiles import EvalResult

POINT_ID = "local/pointmaze/medium-v0"  # the CLI's default id for the waypoint policy
ANT_ID = "test/antmaze/umaze-random-v0"
POINT_STEPS = 1500


@pytest.fixture(scope="module")
def maze_root(tmp_path_factory: pytest.TempPathFactory):
    """This module's datasets root: a waypoint PointMaze-medium dataset (collected by the
    CLI) and a short random AntMaze-umaze one."""
    root = tmp_path_factory.mktemp("mazes")
    patch = pytest.MonkeyPatch()
    patch.setenv("MINARI_DATASETS_PATH", str(root))
    try:
        out = cli("data", "collect", "--env", "pointmaze-medium", "--policy", "waypoint",
                  "--steps", str(POINT_STEPS))  # fmt: skip
        assert POINT_ID in out.stdout
        collect("antmaze-umaze", "random", 300, ANT_ID, seed=3, progress=False)
        yield root
    finally:
        patch.undo()


def raw_env(name: str, **overrides) -> gym.Env:
    """The Gymnasium-Robotics env of a registry entry, without trajplan's flattening."""
    require_robotics()
    info = resolve_env(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # AntMaze-v4 "out of date"
        env = gym.make(info.gym_id, **{**info.kwargs, **overrides})
    drop_model_file(env)  # the maze's MJCF file in the temp folder
    return env


# -- the env factory -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "obs_dim"), [("pointmaze-umaze", 4), ("antmaze-umaze", 27)])
def test_flat_observation_is_observation_then_goal(name: str, obs_dim: int) -> None:
    flat, raw = make_env(name), raw_env(name)
    try:
        assert flat.observation_space.shape == (obs_dim + 2,)
        got, _ = flat.reset(seed=5)
        want, _ = raw.reset(seed=5)
        assert want["observation"].shape == (obs_dim,)
        np.testing.assert_array_equal(
            got, np.concatenate([want["observation"], want["desired_goal"]])
        )
        for _ in range(3):
            action = flat.action_space.sample()
            got, r1, *_ = flat.step(action)
            want, r2, *_ = raw.step(action)
            np.testing.assert_array_equal(got[:obs_dim], want["observation"])
            np.testing.assert_array_equal(got[obs_dim:], want["desired_goal"])
            assert r1 == r2
    finally:
        flat.close()
        raw.close()


def test_registry_mazes_are_d4rl_tasks() -> None:
    names = [f"pointmaze-{s}{d}" for s in ("umaze", "medium", "large") for d in ("", "-dense")]
    names += [f"antmaze-{s}" for s in ("umaze", "medium", "large")]
    assert set(names) <= set(REGISTRY)
    limits = {"pointmaze-umaze": 300, "pointmaze-medium": 600, "pointmaze-large": 800,
              "antmaze-umaze": 700, "antmaze-medium": 1000, "antmaze-large": 1000}  # fmt: skip
    for name, limit in limits.items():
        env = make_env(name)
        try:
            assert env.spec.max_episode_steps == limit, name
        finally:
            env.close()
    assert (REGISTRY["pointmaze-large"].ref_min, REGISTRY["pointmaze-large"].ref_max) == (
        6.7,
        273.99,
    )
    assert (REGISTRY["antmaze-medium"].ref_min, REGISTRY["antmaze-medium"].ref_max) == (0.0, 1.0)
    assert REGISTRY["pointmaze-umaze"].dataset_id == "D4RL/pointmaze/umaze-v2"
    assert REGISTRY["antmaze-large"].dataset_id == "D4RL/antmaze/large-diverse-v1"
    assert resolve_env("AntMaze_Medium_Diverse_GR-v4").name == "antmaze-medium"  # its dataset's env


# -- the waypoint controller -----------------------------------------------------------------


@pytest.mark.parametrize("size", ["umaze", "medium", "large"])
def test_waypoint_controller_reaches_every_goal_noise_free(size: str) -> None:
    name = f"pointmaze-{size}"
    env = make_env(name)
    try:
        policy = WaypointPolicy.for_env(env)
    finally:
        env.close()
    episodes = play_policy(policy, name, range(4))  # the env's own step limit, 4 starts
    assert [ep.success for ep in episodes] == [True] * 4
    limit = {"umaze": 300, "medium": 600, "large": 800}[size]
    for ep in episodes:
        assert ep.length == limit  # a continuing task: the return counts steps at the goal
        assert 0 < ep.ret < limit and ep.rewards[-1] == 1.0  # arrived, and stayed
        assert ep.score is not None and ep.score > 50  # far above D4RL's random policy


# -- collected datasets ----------------------------------------------------------------------


def test_maze_dataset_has_the_goal_in_every_observation(maze_root: Path) -> None:
    """Replaying the recorded actions in the collection task: every observation's last two
    dims are the env's desired goal (also the first one after a goal, with the new goal)."""
    ds = minari.load_dataset(POINT_ID)
    info = REGISTRY["pointmaze-medium"]
    env = raw_env("pointmaze-medium", **info.collect_kwargs)
    try:
        obs, _ = env.reset(seed=0)
        n_goals = 0
        for ep in ds.iterate_episodes():
            np.testing.assert_array_equal(ep.observations[0, :4], obs["observation"])
            np.testing.assert_array_equal(ep.observations[0, 4:], env.unwrapped.goal)
            for t, action in enumerate(ep.actions):
                obs, *_ = env.step(action)
                np.testing.assert_array_equal(ep.observations[t + 1, :4], obs["observation"])
                np.testing.assert_array_equal(ep.observations[t + 1, 4:], obs["desired_goal"])
            n_goals += 1
        assert n_goals == ds.total_episodes > 5
    finally:
        env.close()


def test_maze_episodes_end_at_their_goals(maze_root: Path) -> None:
    ep = load_episodes(POINT_ID)
    ends = ep.starts + ep.lengths - 1
    assert ep.n_steps == POINT_STEPS and not ep.terminations.any()
    assert ep.truncations[ends].all() and ep.truncations.sum() == ep.n_episodes
    ds = minari.load_dataset(POINT_ID)
    for i, raw in enumerate(ds.iterate_episodes()):
        final = raw.observations[-1]
        reached = np.linalg.norm(final[:2] - final[4:]) <= SUCCESS_RADIUS
        assert reached or i == ds.total_episodes - 1  # only the last one may be cut short
        if reached:  # sparse: 1 at the goal, 0 before it (cut at the first arrival)
            assert raw.rewards[-1] == 1.0 and not raw.rewards[:-1].any()
    import h5py

    with h5py.File(maze_root / POINT_ID / "data" / "main_data.hdf5", "r") as f:
        seeds = [f[f"episode_{i}"].attrs.get("seed") for i in range(len(f))]
    assert seeds[0] == 0 and all(s is None for s in seeds[1:])  # one reset, at the start


def test_maze_dataset_loads_like_mujoco_data_with_its_references(maze_root: Path) -> None:
    ep = load_episodes(POINT_ID)
    assert (ep.ref_min, ep.ref_max) == (13.13, 277.39) and ep.ref_source.startswith("dataset")
    # D4RL measured these on its own maze2d: they approximate the v3 env, not "v5 envs"
    assert ep.ref_source == "dataset metadata: D4RL constants (approximate for v3 envs)"
    info = cli("data", "info", POINT_ID, process=True).stdout
    assert "approximate for v3 envs" in info and "v5" not in info
    assert ep.obs_dim == 6 and ep.act_dim == 2 and ep.env_id == "PointMaze_Medium-v3"
    data = prepare_episodes(ep, DataConfig(seq_len=4, n_bins=16))
    assert data.obs_dim == 6 and data.windows.n_windows > 0
    meta = minari.load_dataset(POINT_ID).storage.metadata
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (13.13, 277.39)
    assert "waypoint" in meta["algorithm_name"] and "noise0.5" in meta["algorithm_name"]
    assert json.loads(meta["eval_env_spec"])["kwargs"]["reset_target"] is False


def test_antmaze_dataset_is_27_plus_goal(maze_root: Path) -> None:
    ep = load_episodes(ANT_ID)
    assert ep.obs_dim == 29 and ep.act_dim == 8 and ep.n_steps == 300
    assert ep.env_id == "AntMaze_UMaze-v4" and (ep.ref_min, ep.ref_max) == (0.0, 1.0)
    goals = ep.observations[:, 27:]
    assert np.abs(goals - goals[0]).max() == 0  # never reached: one goal throughout


def test_dict_goal_datasets_load_flattened(maze_root: Path) -> None:
    """Minari's D4RL maze datasets store Dict observations; they load as the flat layout."""
    env = raw_env("pointmaze-umaze")
    try:
        obs, _ = env.reset(seed=1)
        rows = {k: [v] for k, v in obs.items()}
        actions = []
        for _ in range(20):
            actions.append(env.action_space.sample())
            obs, *_ = env.step(actions[-1])
            for k, v in obs.items():
                rows[k].append(v)
        buffer = EpisodeBuffer(
            observations={k: np.asarray(v) for k, v in rows.items()},
            actions=np.asarray(actions),
            rewards=np.zeros(20),
            terminations=np.zeros(20, bool),
            truncations=np.r_[np.zeros(19, bool), True],
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # author, permalink, ... "recommended"
            minari.create_dataset_from_buffers("test/pointmaze/dict-v0", [buffer], env=env)
    finally:
        env.close()
    ep = load_episodes("test/pointmaze/dict-v0")
    assert ep.obs_dim == 6
    want = np.concatenate([rows["observation"], rows["desired_goal"]], axis=1)[:20]
    np.testing.assert_allclose(ep.observations, want.astype(np.float32))
    assert (ep.ref_min, ep.ref_max) == (23.85, 161.86)  # the registry's D4RL constants
    assert dataset_info("test/pointmaze/dict-v0")["obs_dim"] == 6


# -- success rate in evaluation --------------------------------------------------------------


def test_eval_reports_success_rate(maze_root: Path, tmp_path: Path) -> None:
    env = make_env("pointmaze-umaze")
    try:
        episodes = play_policy(WaypointPolicy.for_env(env), "pointmaze-umaze", [0, 1])
    finally:
        env.close()
    result = EvalResult("pointmaze-umaze", "PointMaze_UMaze-v3", episodes,
                        references_for("pointmaze-umaze"), {}, 1.0, 600)  # fmt: skip
    assert result.summary()["success_rate"] == 1.0
    cli("bc", "--dataset", POINT_ID, "--out", str(tmp_path / "bc"), "--steps", "30",
        "--hidden", "16", "--no-progress")  # fmt: skip
    out = cli("eval", str(tmp_path / "bc"), "--episodes", "2", "--out", str(tmp_path / "ev"),
              "--no-progress")  # fmt: skip
    assert "success" in out.stdout
    (doc,) = (tmp_path / "ev").glob("*/eval.json")
    doc = json.loads(doc.read_text())
    assert doc["env"] == "pointmaze-medium" and doc["summary"]["success_rate"] in (0.0, 0.5, 1.0)
    assert all(e["success"] in (True, False) for e in doc["episodes"])


def test_mujoco_episodes_report_no_success() -> None:
    (ep,) = play_policy(_Zero(), "hopper", [0])
    assert ep.success is None


class _Zero:
    """A do-nothing behaviour policy (Hopper's 3 action dims)."""

    name = "zero"

    def reset(self, seed: int | None) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.zeros(3, np.float32)

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: float) -> None:
        pass


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--env", "pointmaze-huge", "--policy", "waypoint"), ("unknown env", "pointmaze")),
        (("--env", "antmaze-umaze", "--policy", "waypoint"), ("waypoint policy", "pointmaze")),
        (("--env", "hopper", "--policy", "waypoint"), ("waypoint policy",)),
        (("--env", "pointmaze-umaze", "--policy", "waypoint", "--noise", "x"), ("--noise",)),
        (("--env", "pointmaze-umaze", "--policy", "./no/actor"), ("give --dataset-id",)),
    ],
)
def test_bad_maze_input_is_one_line(maze_root: Path, args: tuple, words: tuple) -> None:
    one_line_error(cli("data", "collect", *args, "--steps", "10", code=None), *words)
