"""Shared fixtures: small real Minari datasets written from real MuJoCo rollouts.

`minari_datasets` (session) points MINARI_DATASETS_PATH at a temporary root for the whole
session (restored afterwards) and writes two datasets with random actions and fixed seeds:

- HALFCHEETAH_ID: HalfCheetah-v5, 4 episodes of 60 steps, truncations only, reference scores
  stored in the dataset metadata;
- HOPPER_ID: Hopper-v5, 8 episodes of at most 100 steps; random actions make the hopper fall,
  so most episodes end in a true termination; no reference scores in the metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

HALFCHEETAH_ID = "test/halfcheetah/random-v0"
HOPPER_ID = "test/hopper/random-v0"
HALFCHEETAH_REFS = (-300.0, 12000.0)


def random_rollouts(env_name: str, n_episodes: int, max_steps: int, seed: int) -> list[dict]:
    """Episodes of uniform random actions; episode i is reset with seed + i."""
    from trajplan.envs import make_env

    env = make_env(env_name)
    episodes = []
    try:
        for i in range(n_episodes):
            obs, _ = env.reset(seed=seed + i)
            env.action_space.seed(seed + i)
            rows: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "term", "trunc")}
            rows["obs"].append(obs)
            for t in range(max_steps):
                act = env.action_space.sample()
                obs, rew, term, trunc, _ = env.step(act)
                trunc = (trunc or t == max_steps - 1) and not term
                for k, v in zip(rows, (obs, act, rew, term, trunc), strict=True):
                    rows[k].append(v)
                if term or trunc:
                    break
            episodes.append(
                {
                    "observations": np.asarray(rows["obs"]),
                    "actions": np.asarray(rows["act"]),
                    "rewards": np.asarray(rows["rew"], dtype=np.float64),
                    "terminations": np.asarray(rows["term"], dtype=bool),
                    "truncations": np.asarray(rows["trunc"], dtype=bool),
                }
            )
    finally:
        env.close()
    return episodes


@dataclass
class MinariFixture:
    root: Path  # the session's MINARI_DATASETS_PATH
    halfcheetah: str  # dataset ids
    hopper: str
    written: dict[str, list[dict]]  # id -> the episode dicts that were written
    seeds: dict[str, list[int]]
    refs: dict[str, tuple]  # id -> (ref_min, ref_max) written into the metadata


@pytest.fixture(scope="session")
def minari_datasets(tmp_path_factory: pytest.TempPathFactory):
    """Write the two test datasets into a session-wide temporary MINARI_DATASETS_PATH."""
    from trajplan.data import create_dataset

    root = tmp_path_factory.mktemp("minari")
    patch = pytest.MonkeyPatch()
    patch.setenv("MINARI_DATASETS_PATH", str(root))
    try:
        written, seeds, refs_of = {}, {}, {}
        for dataset_id, env, n_ep, steps, seed, refs in (
            (HALFCHEETAH_ID, "HalfCheetah-v5", 4, 60, 100, HALFCHEETAH_REFS),
            (HOPPER_ID, "Hopper-v5", 8, 100, 200, (None, None)),
        ):
            episodes = random_rollouts(env, n_ep, steps, seed)
            seeds[dataset_id] = [seed + i for i in range(n_ep)]
            create_dataset(
                dataset_id,
                episodes,
                env,
                seeds=seeds[dataset_id],
                ref_min=refs[0],
                ref_max=refs[1],
                algorithm_name="random",
                description=f"test fixture: random actions in {env}",
            )
            written[dataset_id] = episodes
            refs_of[dataset_id] = refs
        yield MinariFixture(root, HALFCHEETAH_ID, HOPPER_ID, written, seeds, refs_of)
    finally:
        patch.undo()


@pytest.fixture
def minari_root(minari_datasets: MinariFixture) -> Path:
    """The session's MINARI_DATASETS_PATH (the two test datasets live there)."""
    return minari_datasets.root


@pytest.fixture
def halfcheetah_dataset(minari_datasets: MinariFixture) -> str:
    return minari_datasets.halfcheetah


@pytest.fixture
def hopper_dataset(minari_datasets: MinariFixture) -> str:
    return minari_datasets.hopper


@pytest.fixture(scope="session")
def tiny_run(minari_datasets: MinariFixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run directory: configs/tiny.yaml trained for 10 epochs (40 steps, a few
    seconds on one CPU thread) on the HalfCheetah fixture dataset. Read it, don't write it."""
    import torch

    from trajplan.config import load_config
    from trajplan.train import train

    cfg = load_config(Path(__file__).parents[1] / "configs" / "tiny.yaml")
    cfg.dataset = minari_datasets.halfcheetah
    cfg.train.epochs = 10
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is faster, and immune to busy cores
    try:
        return train(cfg, tmp_path_factory.mktemp("runs") / "tiny", device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a CPU: one intra-op thread is faster, and immune to busy cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(*args: str) -> int:
    """Run the trajplan command line in this process; returns its exit code."""
    from trajplan.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def one_line_error(code: int, err: str, *words: str) -> None:
    """Exit code 2, one line on stderr, no traceback, every word in it."""
    assert code == 2, err
    assert err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err
