"""TT + Q through runs: `--critic IQL_RUN` makes an IQL run's critic score the beams of a
TT run, recorded in eval.json, and the episodes are the reference search's (batched or
alone); a critic for another env or other dims is refused in one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import cli, one_line_error
from test_reference_search import reference_planner

from trajplan.baselines.iql import IQLConfig, train_iql
from trajplan.errors import TrajplanError
from trajplan.evaluation.evaluate import run_episodes, with_overrides
from trajplan.planner.scorers import CriticScorer
from trajplan.runs import load_critic, load_run


def small_iql(dataset: str, out: Path) -> Path:
    cfg = IQLConfig(steps=30, batch_size=32, hidden=[16], log_every=30)
    return train_iql(dataset, out, cfg, progress=False)


@pytest.fixture(scope="module")
def critics(minari_datasets, tmp_path_factory, one_thread) -> tuple[Path, Path]:
    """IQL runs on the HalfCheetah fixture (the tiny TT run's data) and on Hopper's."""
    root = tmp_path_factory.mktemp("iql")
    return (
        small_iql(minari_datasets.halfcheetah, root / "hc"),
        small_iql(minari_datasets.hopper, root / "hopper"),
    )


def test_a_tt_run_plans_with_an_iql_critic(tiny_run: Path, critics, tmp_path: Path) -> None:
    hc, _ = critics
    run = load_run(tiny_run, device="cpu")
    run.plan = with_overrides(run.plan, critic=str(hc), horizon=2, beam_width=4)
    planner = run.policy("halfcheetah", run.checkpoint.model.pos_emb.device)
    assert isinstance(planner.scorer, CriticScorer)
    with_q = run_episodes(run, seeds=[1, 2], episode_steps=4, progress=False)
    assert with_q.plan["critic"] == str(hc.resolve())
    alone = run_episodes(run, seeds=[2], episode_steps=4, progress=False)
    with reference_planner():  # the paper's loop, one episode at a time, the same critic
        ref = run_episodes(run, seeds=[1, 2], episode_steps=4, progress=False)
    for e in range(2):
        assert with_q.episodes[e].ret == pytest.approx(ref.episodes[e].ret, abs=1e-9)
    assert alone.episodes[0].ret == pytest.approx(ref.episodes[1].ret, abs=1e-9)
    run.plan = dataclasses.replace(run.plan, critic=None)
    tt = run_episodes(run, seeds=[1, 2], episode_steps=4, progress=False)
    assert [e.ret for e in tt.episodes] != [e.ret for e in with_q.episodes]

    out = tmp_path / "ev"
    cli("eval", str(tiny_run), "--critic", str(hc), "--episodes", "1", "--episode-steps", "3",
        "--horizon", "2", "--beam-width", "2", "--threads", "1", "--out", str(out))  # fmt: skip
    (folder,) = out.iterdir()
    assert "-criticq-" in folder.name
    doc = json.loads((folder / "eval.json").read_text())
    assert doc["plan"]["critic"] == str(hc.resolve()) and doc["summary"]["episodes"] == 1


def test_a_critic_for_another_env_or_not_an_iql_run_is_one_line(
    tiny_run: Path, critics, minari_datasets
) -> None:
    hc, hopper = critics
    assert load_critic(hc, "halfcheetah").obs_dim == 17
    with pytest.raises(TrajplanError, match="trained on hopper"):
        load_critic(hopper, "halfcheetah")
    with pytest.raises(TrajplanError, match="is not an IQL run"):
        load_critic(tiny_run, "halfcheetah")
    res = cli("eval", str(tiny_run), "--critic", str(hopper), "--episodes", "1", code=2)
    one_line_error(res, "trained on hopper")
    res = cli("eval", str(tiny_run), "--critic", str(tiny_run), "--episodes", "1", code=2)
    one_line_error(res, "is not an IQL run")
