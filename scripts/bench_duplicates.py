"""How much work would merging identical beams save? The share of duplicate rows in the
cached planner's per-token forward passes, measured on a trained run.

Beams that share their whole planned prefix (the n_expand copies of a beam before their
first action token differs, or beams whose samples coincide) give identical logits: a
forward pass over only the distinct rows would be exact. This script plans a few steps of
an episode with the run's own planning config, counts, at every decoded token, the rows
whose planned tokens so far repeat another row of the same episode, and reports that share
(an upper bound on what de-duplicating the per-token passes could save). The recompute when
the window slides already computes each distinct prefix once (planner/windows.py).

    python scripts/bench_duplicates.py RUN [--steps 30] [--seed 100]

Prints a table, then one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json

import torch
from rich.console import Console
from rich.table import Table

from trajplan.evaluation.evaluate import evaluate
from trajplan.planner import windows
from trajplan.runs.checkpoint import load_checkpoint


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", help="a trained TT run directory")
    ap.add_argument("--steps", type=int, default=30, help="env steps to plan")
    ap.add_argument("--seed", type=int, default=100, help="episode seed")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ckpt = load_checkpoint(args.run, device="cpu")
    counts = {"rows": 0, "distinct": 0}
    feed = windows.CachedWindow.feed

    def counting_feed(self: windows.CachedWindow, tok: torch.Tensor) -> torch.Tensor:
        out = feed(self, tok)
        y = self.y[:, : self.n]  # [R, n] every row's planned tokens so far
        r = y.shape[0] // self.n_env
        episode = torch.arange(y.shape[0])[:, None] // r
        counts["rows"] += y.shape[0]
        counts["distinct"] += torch.unique(torch.cat([episode, y], 1), dim=0).shape[0]
        return out

    windows.CachedWindow.feed = counting_feed  # type: ignore[method-assign]
    try:
        cfg = ckpt.config.plan
        result = evaluate(
            ckpt.model, ckpt.discretizer, ckpt.env, cfg, n_episodes=1, seed=args.seed,
            episode_steps=args.steps, device="cpu", progress=False,
        )  # fmt: skip
    finally:
        windows.CachedWindow.feed = feed  # type: ignore[method-assign]
    share = 1.0 - counts["distinct"] / counts["rows"]
    table = Table(title=f"duplicate rows in per-token passes: {args.run}")
    for col in ("plan", "env steps", "rows decoded", "distinct", "duplicate share"):
        table.add_column(col, justify="right")
    plan = f"h{cfg.horizon} b{cfg.beam_width} x{cfg.n_expand}"
    table.add_row(plan, str(result.env_steps), f"{counts['rows']:,}", f"{counts['distinct']:,}",
                  f"{100 * share:.1f}%")  # fmt: skip
    Console(width=100).print(table)
    print(json.dumps({"run": args.run, "env_steps": result.env_steps, "rows": counts["rows"],
                      "distinct_rows": counts["distinct"], "duplicate_share": round(share, 4),
                      "ms_per_step": round(result.summary()["ms_per_step"], 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
