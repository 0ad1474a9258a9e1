"""The run interface (trajplan.runs): one loader for TT and BC runs, and the single-step
Agent, which must act exactly as the batched evaluation does on the same seed."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from trajplan.baselines.bc import BCConfig, train_bc
from trajplan.envs.registry import make_env
from trajplan.errors import TrajplanError
from trajplan.evaluation.evaluate import run_episodes
from trajplan.evaluation.runner import evaluate_runs
from trajplan.runs import load_run


@pytest.fixture(scope="module")
def small_bc(minari_datasets, tmp_path_factory, one_thread) -> Path:
    out = tmp_path_factory.mktemp("bc") / "bc"
    cfg = BCConfig(steps=50, log_every=50, hidden=[16])
    return train_bc(minari_datasets.halfcheetah, out, cfg, progress=False)


def play_agent(agent, env_name: str, seed: int, steps: int) -> tuple[list[np.ndarray], float]:
    """One episode step by step through the Agent: its actions and return."""
    env = make_env(env_name)
    obs, _ = env.reset(seed=seed)
    agent.reset(seed)
    actions, ret = [], 0.0
    for _ in range(steps):
        action = agent.act(obs)
        nxt, reward, term, trunc, _ = env.step(action)
        agent.observe(obs, action, reward)
        actions.append(np.asarray(action))
        ret += float(reward)
        obs = nxt
        if term or trunc:
            break
    env.close()
    return actions, ret


def test_tt_agent_acts_as_the_batched_evaluation(tiny_run: Path, one_thread) -> None:
    run = load_run(tiny_run, device="cpu")
    assert run.kind == "tt" and run.env == "halfcheetah" and run.weights == "last"
    assert run.settings()["horizon"] == run.plan.horizon
    actions, ret = play_agent(run.agent(), "halfcheetah", seed=3, steps=6)
    result = run_episodes(run, seeds=[2, 3], episode_steps=6, progress=False)
    assert result.episodes[1].ret == pytest.approx(ret, abs=1e-9)  # batched == alone
    assert result.checkpoint == str(tiny_run) and result.plan["horizon"] == run.plan.horizon
    assert len(actions) == 6 and actions[0].shape == (6,)


def test_bc_agent_is_its_policy(small_bc: Path) -> None:
    run = load_run(small_bc)
    assert run.kind == "bc" and run.plan is None and run.settings() == {"policy": "bc"}
    agent = run.agent()
    env = make_env("halfcheetah")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(agent.act(obs), run.actor.act(obs[None])[0])
    actions, ret = play_agent(agent, "halfcheetah", seed=4, steps=5)
    result = run_episodes(run, seeds=[4], episode_steps=5, progress=False)
    assert result.episodes[0].ret == pytest.approx(ret, abs=1e-9)
    noisy = load_run(small_bc, action_noise=0.5)
    assert noisy.settings() == {"policy": "bc", "action_noise": 0.5}
    moved = run_episodes(noisy, seeds=[4], episode_steps=5, progress=False)
    assert moved.episodes[0].ret != pytest.approx(ret)


def test_bad_runs_and_options_are_one_line_errors(tiny_run: Path, small_bc: Path, tmp_path) -> None:
    with pytest.raises(TrajplanError, match="action noise is for policy runs"):
        load_run(tiny_run, action_noise=0.1)
    with pytest.raises(TrajplanError, match="action noise must be >= 0"):
        load_run(small_bc, action_noise=-1.0)
    with pytest.raises(TrajplanError, match="trained on halfcheetah"):
        load_run(tiny_run, device="cpu").agent("hopper")
    with pytest.raises(TrajplanError):
        load_run(tmp_path / "nothing")


@contextlib.contextmanager
def threads_seen() -> Iterator[list[int]]:
    """Inside: torch's thread count at every forward call of any module (torch's global
    forward hook), in the list it yields."""
    seen: list[int] = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda *_: seen.append(torch.get_num_threads())
    )
    try:
        yield seen
    finally:
        hook.remove()


@pytest.fixture
def two_threads() -> Iterator[None]:
    """torch on 2 threads (its default on a 2-core machine), as a script starts."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_the_agent_plans_on_one_thread_as_the_cli(tiny_run: Path, two_threads) -> None:
    """The README's agent planned with torch's default threads, 30-100x slower than the
    CLI's one thread: the library's default is the CLI's, threads= changes it, and the
    caller's own setting is back after every call."""
    env = make_env("halfcheetah")
    obs, _ = env.reset(seed=0)
    for kw, want in (({}, 1), ({"threads": 2}, 2)):
        agent = load_run(tiny_run, device="cpu").agent(seed=0, **kw)
        with threads_seen() as seen:
            action = agent.act(obs)
            agent.observe(obs, action, 0.0)
            agent.act(obs)
        assert seen and set(seen) == {want}, kw
        assert torch.get_num_threads() == 2  # the caller's setting, restored
    env.close()
    with pytest.raises(TrajplanError, match="threads must be at least 1"):
        load_run(tiny_run, device="cpu").agent(threads=0)


def test_evaluate_runs_as_the_readme_shows_it(
    tiny_run: Path, small_bc: Path, tmp_path: Path, two_threads
) -> None:
    """The README's `evaluate_runs(..., workers=2)` ended in a TypeError (video paths built
    from no video folder); in one process it planned with torch's default threads."""
    runs = [shutil.copytree(tiny_run, tmp_path / "tt"), shutil.copytree(small_bc, tmp_path / "bc")]
    small = lambda cfg: dataclasses.replace(cfg, horizon=2, beam_width=4)  # noqa: E731
    done = evaluate_runs(runs, episodes=2, seed=0, workers=2, episode_steps=3, plan=small,
                         progress=False)  # fmt: skip
    assert [e.name for e in done] == ["tt", "bc"] and all(e.path.is_file() for e in done)
    assert all(e.videos == [] for e in done)
    with threads_seen() as seen:  # in this process
        (one,) = evaluate_runs(runs[:1], episodes=1, episode_steps=2, plan=small, progress=False)
    assert one.result.episodes[0].length == 2 and set(seen) == {1}
    assert torch.get_num_threads() == 2
