"""Does a TT run see its dataset's rewards? Teacher-forced reward predictions against the data.

    python scripts/diag_rewards.py --run runs/pm-medium-tt
    python scripts/diag_rewards.py --run runs/pm-medium-tt --windows 50000 --seed 1

For up to `--windows` of the run's training windows (drawn with `--seed`), the model reads
each window as in training and predicts every step's reward token from what comes before it;
its expected reward sum_i p_i * midpoint_i (the planner's reading, docs/method.md, Planner)
is set against the step's reward in the data (with the run's termination penalty). On a
sparse-reward dataset the figures that matter are the correlation and the mean prediction at
rewarded steps against elsewhere: with bins that give reward 0 and reward 1 one token
(`data.exact_bins: reference` and fewer than 1/N of the steps rewarded) the prediction is one
constant, the correlation near 0, and every step reads as half a goal.

Prints a table, then one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from trajplan.data.transitions import load_episodes, prepare_episodes
from trajplan.errors import TrajplanError
from trajplan.runs.checkpoint import load_checkpoint


def reward_predictions(run: str, windows: int, seed: int, batch: int = 1024) -> dict:
    """Expected and true first-step rewards over sampled windows of the run's data."""
    ckpt = load_checkpoint(run, device="cpu")
    cfg = ckpt.config
    ep = load_episodes(ckpt.dataset_id)
    data = prepare_episodes(ep, cfg.data, discretizer=ckpt.discretizer)
    w = data.windows
    o, a = data.obs_dim, data.act_dim
    pick = np.random.default_rng(seed).permutation(w.n_windows)[:windows]
    L, D = w.seq_len, data.transition_dim
    at = np.arange(L) * D + o + a - 1  # [L] the positions that predict each step's reward
    pred = np.empty((len(pick), L))
    with torch.no_grad():
        for i in range(0, len(pick), batch):
            rows = torch.as_tensor(pick[i : i + batch])
            idx, _, _ = w.get_batch(rows)  # [b, L*D-1]
            logits, _ = ckpt.model(idx, goal=w.goal_batch(rows))  # [b, L*D-1, N+1]
            probs = torch.softmax(logits[:, at, :-1].double(), -1)  # [b, L, N]
            pred[i : i + batch] = ckpt.discretizer.expectation(probs, o + a).numpy()
    ep_of = w.episode_index[pick]
    t = w.t_start.numpy()[pick][:, None] + np.arange(L)  # [windows, L] time in the episode
    inside = t < ep.lengths[ep_of][:, None]  # steps of the episode, not its stop padding
    step = (ep.starts[ep_of][:, None] + t)[inside]  # data rows
    pred = pred[inside]
    true = data.transitions[step, o + a].astype(np.float64)
    rewarded = true > np.median(true) if len(np.unique(true)) > 2 else true == true.max()
    corr = float(np.corrcoef(pred, true)[0, 1]) if pred.std() > 0 and true.std() > 0 else 0.0
    return {
        "run": run,
        "exact_bins": cfg.data.exact_bins,
        "windows": len(pick),
        "steps": int(len(true)),
        "rewarded_steps": int(rewarded.sum()),
        "reward_corr": round(corr, 4),
        "pred_at_reward": round(float(pred[rewarded].mean()), 4),
        "pred_elsewhere": round(float(pred[~rewarded].mean()), 4),
        "true_at_reward": round(float(true[rewarded].mean()), 4),
        "true_elsewhere": round(float(true[~rewarded].mean()), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", required=True, action="append", help="a TT run (repeatable)")
    ap.add_argument("--windows", type=int, default=20_000, help="windows to sample (>= 100)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the window sample")
    args = ap.parse_args(argv)
    if args.windows < 100:
        print("error: --windows must be at least 100", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    try:
        rows = [reward_predictions(r, args.windows, args.seed) for r in args.run]
    except TrajplanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = Table(title="teacher-forced reward predictions (every step of each window)")
    heads = ("run", "exact_bins", "corr", "E\\[r] at reward", "E\\[r] elsewhere", "reward steps")
    for head in heads:
        table.add_column(head)
    for r in rows:
        table.add_row(r["run"], r["exact_bins"], f"{r['reward_corr']:.3f}",
                      f"{r['pred_at_reward']:.3f} (data {r['true_at_reward']:.3g})",
                      f"{r['pred_elsewhere']:.3f} (data {r['true_elsewhere']:.3g})",
                      f"{r['rewarded_steps']} of {r['steps']}")  # fmt: skip
    Console(width=160).print(table)
    print(json.dumps({"runs": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
