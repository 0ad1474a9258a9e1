"""Shared fixtures: small real Minari datasets written from real MuJoCo rollouts.

`minari_datasets` (session) points MINARI_DATASETS_PATH at a temporary root for the whole
session (restored afterwards) and writes two datasets with random actions and fixed seeds:

- HALFCHEETAH_ID: HalfCheetah-v5, 4 episodes of 60 steps, truncations only, reference scores
  stored in the dataset metadata;
- HOPPER_ID: Hopper-v5, 8 episodes of at most 100 steps; random actions make the hopper fall,
  so most episodes end in a true termination; no reference scores in the metadata.

And the helpers every test file shares (`from conftest import ...`): `cli` runs the command
line (in this process, or as a child with process=True) and checks its exit code,
`one_line_error` checks a failed command's single stderr line, `tiny_model` /
`tiny_model_config` build a toy TrajectoryGPT.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    from trajplan.config import ModelConfig
    from trajplan.model.gpt import TrajectoryGPT


def pytest_configure(config: pytest.Config) -> None:
    """Signals and threads as the tests expect them, however pytest was started.

    A shell without job control (`nohup make test &`, some CI runners) starts pytest with
    SIGINT ignored, and an ignored signal stays ignored in every child: the Ctrl-C tests'
    children would run on. Python's own handler here resets the children to the default
    (they then raise KeyboardInterrupt, as from a terminal). Under pytest-xdist each worker
    takes one intra-op thread: the tests' tiny models are fastest so, and two workers of two
    threads each on two cores lose more to waiting than they gain."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


# The files that take longest (`make test` lists the slowest tests), run first: pytest-xdist
# hands each worker whole files in collection order, so a long file started last would keep
# one worker busy while the other waits.
LONGEST_FIRST = ("test_ray.py", "test_processes.py", "test_learning.py", "test_guards.py",
                 "test_faults.py", "test_evalfiles.py", "test_data.py", "test_docs.py",
                 "test_evaluate.py", "test_train.py", "test_workflow.py")  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the files longest first (`LONGEST_FIRST`), the rest as collected."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


HALFCHEETAH_ID = "test/halfcheetah/random-v0"
HOPPER_ID = "test/hopper/random-v0"
HALFCHEETAH_REFS = (-300.0, 12000.0)


def random_rollouts(env_name: str, n_episodes: int, max_steps: int, seed: int) -> list[dict]:
    """Episodes of uniform random actions; episode i is reset with seed + i."""
    from trajplan.envs.registry import make_env

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
    from trajplan.data.transitions import create_dataset

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
    """A finished run directory: the tiny config trained for 10 epochs (40 steps, a few
    seconds on one CPU thread) on the HalfCheetah fixture dataset. Read it, don't write it."""
    import torch

    from trajplan.configs import load_config
    from trajplan.training.loop import train

    cfg = load_config("tiny")
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


@dataclass
class CliResult:
    """What `cli` returns; named as subprocess.CompletedProcess, so one_line_error and the
    tests read an in-process run and a child process alike."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def cli(
    *args: str, code: int | None = 0, process: bool = False, env: dict[str, str] | None = None
) -> CliResult:
    """Run `trajplan ARGS` and return its exit code and output; assert the exit code is
    `code` (None: any).

    In this process by default (fast; stdout and stderr captured here, not by capsys). With
    `process=True` as a child `python -m trajplan` (the real entry point's exit codes,
    interpreter state of its own), with os.environ plus `env` and COLUMNS=200 (no wrapping).
    """
    argv = [str(a) for a in args]
    if process:
        full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "trajplan", *argv], capture_output=True, text=True, env=full_env
        )
        result = CliResult(argv, proc.returncode, proc.stdout, proc.stderr)
    else:
        assert env is None, "env= needs process=True (or monkeypatch.setenv)"
        from trajplan.cli import main

        out, err = io.StringIO(), io.StringIO()
        returncode = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
            except SystemExit as exc:
                returncode = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        result = CliResult(argv, returncode, out.getvalue(), err.getvalue())
    if code is not None:
        assert result.returncode == code, (
            f"trajplan {' '.join(argv)} exited {result.returncode}, expected {code}\n"
            f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
        )
    return result


def one_line_error(result: CliResult | subprocess.CompletedProcess, *words: str) -> None:
    """Exit code 2, one line on stderr, no traceback, every word in it."""
    err = result.stderr
    assert result.returncode == 2, err
    assert err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err


def tiny_model_config(
    obs_dim: int = 3, act_dim: int = 2, vocab_size: int = 7, transitions: int = 6, **kw: Any
) -> ModelConfig:
    """A toy ModelConfig: 2 layers, 2 heads, 16-dim embeddings, no dropout, a window of
    `transitions` transitions (block_size = transitions * (obs + act + 2) - 1); `kw` overrides
    any field (n_layer=4, dropout=0.1, block_size=..., ...)."""
    from trajplan.config import ModelConfig

    fields: dict[str, Any] = dict(
        obs_dim=obs_dim,
        act_dim=act_dim,
        vocab_size=vocab_size,
        block_size=transitions * (obs_dim + act_dim + 2) - 1,
        n_layer=2,
        n_head=2,
        n_embd=16,
        dropout=0.0,
    )
    fields.update(kw)
    return ModelConfig(**fields)


def tiny_model(seed: int = 0, *, noise: float = 0.0, **kw: Any) -> TrajectoryGPT:
    """A TrajectoryGPT of `tiny_model_config(**kw)`, initialised after torch.manual_seed(seed),
    in eval mode (float32 on the CPU; `.double()`/`.train()` it as a test needs).

    `noise` > 0 then adds N(0, noise^2) to every parameter (same generator, right after the
    init): large random weights give peaked, position-dependent predictions, where the
    reference init (small weights, zero pos_emb) predicts nearly uniform ones."""
    import torch

    from trajplan.model.gpt import TrajectoryGPT

    torch.manual_seed(seed)
    model = TrajectoryGPT(tiny_model_config(**kw)).eval()
    if noise:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * noise)
    return model


class SmallCritic:
    """An untrained critic for planner tests: Q and V as small MLPs on raw observations and
    actions of the given sizes (what `trajplan.planner.scorers.CriticScorer` reads)."""

    def __init__(self, seed: int, obs_dim: int, act_dim: int) -> None:
        import torch

        torch.manual_seed(seed)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.qnet = torch.nn.Sequential(torch.nn.Linear(obs_dim + act_dim, 16), torch.nn.Tanh(),
                                        torch.nn.Linear(16, 1))  # fmt: skip
        self.vnet = torch.nn.Sequential(torch.nn.Linear(obs_dim, 16), torch.nn.Tanh(),
                                        torch.nn.Linear(16, 1))  # fmt: skip

    def q(self, obs: Any, act: Any) -> Any:
        import torch

        return 10 * self.qnet(torch.cat([obs, act], dim=1))[:, 0]

    def v(self, obs: Any) -> Any:
        return 10 * self.vnet(obs)[:, 0]


def random_actor(obs_dim: int, act_dim: int, seed: int = 0) -> Any:
    """A random tanh MLP actor (16 hidden units, actions in [-1, 1]): a prior for tests."""
    from trajplan.model.actor import Actor

    rng = np.random.default_rng(seed)
    return Actor(
        weights=[rng.normal(size=(16, obs_dim)).astype(np.float32),
                 rng.normal(size=(act_dim, 16)).astype(np.float32)],
        biases=[np.zeros(16, np.float32), np.zeros(act_dim, np.float32)],
        activation="tanh",
        action_low=-np.ones(act_dim, np.float32),
        action_high=np.ones(act_dim, np.float32),
    )  # fmt: skip
