"""Logs without a terminal: plain periodic progress lines instead of live bars, and tables
that stay readable at 80 columns."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from trajplan.progress import Progress, duration


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with Progress("planning hopper", 200, interval_s=0, console=Console(file=out)) as bar:
        bar.update(advance=50, info="mean return 12.5")
        bar.update(advance=50, total=150)
    lines = out.getvalue().splitlines()
    assert lines[0] == "planning hopper: 0/200 (0%), started"
    assert re.fullmatch(r"planning hopper: 50/200 \(25%\), mean return 12.5, \d+s elapsed, "
                        r"~\d+s left", lines[1])  # fmt: skip
    assert lines[-1].startswith("planning hopper: 100/150 (67%), mean return 12.5, done in ")
    assert "\x1b" not in out.getvalue()  # no control codes in a log file


def test_quiet_between_intervals_and_a_failure_is_reported() -> None:
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with Progress("bc x", 1000, interval_s=3600, console=Console(file=out)) as bar:
            for _ in range(100):
                bar.update(advance=1)
            raise KeyboardInterrupt
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "stopped after" in lines[1] and "100/1,000" in lines[1]
    silent = io.StringIO()
    with Progress("x", 10, enabled=False, console=Console(file=silent)) as bar:
        bar.update(advance=10)
    assert silent.getvalue() == "" and bar.completed == 10


def test_a_bar_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with Progress("collect random", 10, console=console) as bar:
        bar.update(completed=10, info="3 episodes")
    assert "10/10" in out.getvalue() and "3 episodes" in out.getvalue()
    assert "started" not in out.getvalue()


def test_duration() -> None:
    assert [duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]


def test_collect_prints_plain_progress(capsys: pytest.CaptureFixture) -> None:
    from trajplan.behaviour.collect import record_episodes
    from trajplan.behaviour.policies import make_policy
    from trajplan.envs.registry import make_env

    env = make_env("hopper")
    policy = make_policy("random", "hopper", env)
    env.close()
    episodes, _ = record_episodes("hopper", policy, steps=30, seed=0, progress=True)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "collect random: 0/30 (0%), started"
    assert re.fullmatch(rf"collect random: 30/30 \(100%\), {len(episodes)} episodes, done in \d+s",
                        out[-1])  # fmt: skip


def render(table: object, width: int = 80) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.export_text()


def test_eval_table_is_readable_at_80_columns() -> None:
    from trajplan.cli.plan import eval_table
    from trajplan.envs.references import references_for
    from trajplan.envs.rollout import EpisodeResult
    from trajplan.evaluation.evaluate import EvalResult

    def result(rets: list[float], refs: tuple | None = None, steps: int | None = None):
        r = references_for("halfcheetah", *(refs or (None, None)))
        eps = [EpisodeResult(i, x, 1000, r.score(x), False) for i, x in enumerate(rets)]
        return EvalResult("halfcheetah", "HalfCheetah-v5", eps, r, {}, 12.3, 2000, steps)

    rows = [
        ("halfcheetah-medium-20261129-181500", result([4354.1, 4400.0])),
        ("bc-halfcheetah-medium-seed0", result([-12.0, 3.0], steps=100)),
    ]
    text = render(eval_table(rows))
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    assert "4377.1 ± 22.9" in text and "37.5 ± 0.2" in text and "2.2 ± 0.1*" in text
    flat = " ".join(text.split())  # the caption wraps
    assert "D4RL constants (-280.18 .. 12135.00)" in flat and "capped at 100 steps" in flat
    assert "halfcheetah-medium-20261129-181500" in "".join(  # folded, not cut
        line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")
    )
    mixed = render(eval_table([rows[0], ("other", result([1.0], refs=(0.0, 10.0)))]))
    assert "other: dataset metadata (0.00 .. 10.00)" in " ".join(mixed.split())


def test_training_prints_plain_progress_lines_without_a_terminal(
    halfcheetah_dataset: str, tmp_path
) -> None:
    from conftest import cli

    r = cli("train", "--config", "tiny", "--dataset", halfcheetah_dataset, "--out",
            str(tmp_path / "run"), "--max-steps", "6", "--threads", "1", "--set",
            "train.log_every=2", process=True, env={"TRAJPLAN_PROGRESS_EVERY": "0"})  # fmt: skip
    lines = [x for x in r.stdout.splitlines() if x.startswith("train run: ")]
    assert lines[0].endswith("started") and "done in" in lines[-1]
    assert any("epoch 0, loss" in x and "tok/s" in x for x in lines)
    assert "\x1b[" not in r.stdout  # no terminal control codes in a log file
