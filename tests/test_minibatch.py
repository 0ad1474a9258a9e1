"""The one minibatch loop (trajplan.training.minibatch) that BC, IQL and the ensemble train with: a
metrics line every `every` steps and at the last one, holding the means of the real update's
stats since the line before; counters that carry a stopped loop on to the same lines; one
line of error for a stat that is not finite; the hook after every step."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from trajplan.errors import TrajplanError
from trajplan.training.minibatch import Counters, Lines, run_steps


class Regression:
    """A real update: one SGD step of a linear model on a fixed batch; records its stats."""

    def __init__(self, nan_at: int | None = None) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 3, generator=gen)  # [B, 3]
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1  # [B]
        torch.manual_seed(0)
        self.net = torch.nn.Linear(3, 1)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.05)
        self.seen: list[list[float]] = []  # each step's stats, in order
        self.nan_at = nan_at

    def __call__(self) -> torch.Tensor:
        err = self.net(self.x).squeeze(-1) - self.y  # [B]
        loss = err.square().mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        stats = torch.stack([loss, err.abs().max()]).detach()  # [2]
        if self.nan_at == len(self.seen) + 1:
            stats[0] = float("nan")
        self.seen.append(stats.tolist())
        return stats


def lines_of(every: int) -> Lines:
    def diverged(row: dict[str, Any]) -> TrajplanError:
        return TrajplanError(f"test training diverged at step {row['step']}: lower --lr")

    return Lines("test", ("loss", "err_max"), every, lambda r: f"loss {r['loss']:.3f}", diverged)


def rows(c: Counters) -> list[dict[str, Any]]:
    return [json.loads(line) for line in c.lines]


def test_lines_at_every_and_the_last_step_with_the_means_of_the_update() -> None:
    update, seen_by_hook = Regression(), []
    c = run_steps(update, Counters.new(2), 7, lines_of(3), "test", progress=False,
                  extra=lambda: {"val_loss": 0.5},
                  hook=lambda c: seen_by_hook.append(c.step))  # fmt: skip
    assert seen_by_hook == list(range(1, 8))  # after every step, the step done
    got = rows(c)
    assert [r["step"] for r in got] == [3, 6, 7]
    assert [list(r) for r in got] == [["kind", "step", "loss", "err_max", "val_loss", "wall_s"]] * 3
    for r, (a, b) in zip(got, ((0, 3), (3, 6), (6, 7)), strict=True):
        window = update.seen[a:b]  # float64 sums of the float32 stats, in order: exact
        assert r["loss"] == sum(s[0] for s in window) / len(window)
        assert r["err_max"] == sum(s[1] for s in window) / len(window)
        assert r["kind"] == "test" and r["val_loss"] == 0.5 and r["wall_s"] >= 0
    assert got[0]["loss"] > got[2]["loss"]  # it learns
    assert c.step == 7 and not c.acc.any() and c.last() == got[-1]
    assert c.wall_s >= got[-1]["wall_s"] - 1e-3


def test_counters_carry_a_stopped_loop_on_to_the_same_lines() -> None:
    """What IQL saves and restores: stopped by its hook after step 4 (between two lines, its
    sums kept), then continued from a copy of the counters to 7: the lines of a loop never
    stopped."""
    straight = run_steps(Regression(), Counters.new(2), 7, lines_of(3), "test", False)

    def stop_at_4(c: Counters) -> None:
        if c.step == 4:
            raise KeyboardInterrupt

    update, c = Regression(), Counters.new(2)
    with pytest.raises(KeyboardInterrupt):
        run_steps(update, c, 7, lines_of(3), "test", False, hook=stop_at_4)
    assert c.step == 4 and [r["step"] for r in rows(c)] == [3] and c.acc.any()
    saved = Counters(c.step, c.acc.clone(), list(c.lines), c.wall_s)
    run_steps(update, saved, 7, lines_of(3), "test", False)

    def clean(c: Counters) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows(c)]

    assert clean(saved) == clean(straight)


def test_a_stat_that_is_not_finite_is_the_callers_one_line_error() -> None:
    update = Regression(nan_at=5)
    c = Counters.new(2)
    with pytest.raises(TrajplanError) as err:
        run_steps(update, c, 9, lines_of(2), "test", False)
    assert str(err.value) == "test training diverged at step 6: lower --lr"
    assert [r["step"] for r in rows(c)] == [2, 4]  # the finite lines before it are kept
    assert len(update.seen) == 6  # stopped at the line that shows it


def test_without_a_bar_every_tenth_line_is_printed(capsys: pytest.CaptureFixture) -> None:
    run_steps(Regression(), Counters.new(2), 25, lines_of(2), "test", progress=False)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("test step 20/25 loss ")


def test_a_finished_loop_runs_no_step() -> None:
    c = run_steps(Regression(), Counters.new(2), 3, lines_of(2), "test", False)
    update = Regression()
    run_steps(update, c, 3, lines_of(2), "test", False)
    assert update.seen == [] and [r["step"] for r in rows(c)] == [2, 3]
