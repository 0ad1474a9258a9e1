"""The whole trajplan pipeline, offline, on a CPU: `make demo`.

1. data  -- the Minari dataset mujoco/halfcheetah/medium-v0 when it is on disk; otherwise a
            local D4RL-style medium dataset collected with trajplan's bundled SAC actor;
2. train -- a small Trajectory Transformer (configs/cpu-small.yaml) for a fixed time budget;
3. eval  -- beam-search planning in HalfCheetah-v5 over several full 1000-step episodes;
4. a table: behaviour policy score, dataset mean score, TT score (D4RL-normalized).

Everything goes under .demo/ (datasets, run, eval JSON/PNG). Re-running reuses the dataset
and starts a fresh training run. The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / ".demo"
LOCAL_ID = "trajplan-demo/halfcheetah/medium-v0"
MINARI_ID = "mujoco/halfcheetah/medium-v0"


def pick_dataset(steps: int, seed: int) -> str:
    """The real Minari dataset if present, else a local one (collected once, then reused)."""
    from trajplan.collect import collect
    from trajplan.data import local_datasets

    default_root = os.environ.get("MINARI_DATASETS_PATH")
    if any(d["id"] == MINARI_ID for d in local_datasets()):
        return MINARI_ID
    # Keep the demo's own data out of the user's Minari folder.
    os.environ["MINARI_DATASETS_PATH"] = str(DEMO / "datasets")
    if default_root is None and any(d["id"] == LOCAL_ID for d in local_datasets()):
        return LOCAL_ID
    collect("halfcheetah", "medium", steps, LOCAL_ID, seed=seed, force=True)
    return LOCAL_ID


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50_000, help="steps of data to collect")
    ap.add_argument("--train-minutes", type=float, default=8.0, help="training time budget")
    ap.add_argument("--episodes", type=int, default=3, help="evaluation episodes")
    ap.add_argument("--horizon", type=int, default=3, help="planning horizon (reference: 5)")
    ap.add_argument("--beam-width", type=int, default=16, help="beam width (reference: 32)")
    ap.add_argument("--episode-steps", type=int, default=None, help="cap episodes (quick look)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "cpu-small.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from trajplan.checkpoint import load_checkpoint
    from trajplan.config import load_config
    from trajplan.data import load_episodes
    from trajplan.envs import resolve_env
    from trajplan.evaluate import run_episodes
    from trajplan.policies import builtin_actor, load_actor
    from trajplan.report import save_eval
    from trajplan.scores import normalized_score, references_for
    from trajplan.train import train

    console = Console()
    t0 = time.time()
    info = resolve_env("halfcheetah")

    console.rule("[bold]1. data")
    dataset_id = pick_dataset(args.steps, args.seed)
    episodes = load_episodes(dataset_id)
    refs = references_for(info.name, episodes.ref_min, episodes.ref_max)  # else D4RL's
    ref_min, ref_max = refs.ref_min, refs.ref_max
    data_returns = episodes.returns()
    console.print(
        f"{dataset_id}: {episodes.n_episodes} episodes, {episodes.n_steps} steps, "
        f"mean return {data_returns.mean():.1f}"
    )
    t_data = time.time() - t0

    console.rule("[bold]2. train")
    cfg = load_config(args.config)
    cfg.env, cfg.dataset = "halfcheetah", dataset_id
    cfg.train.seed = args.seed
    cfg.train.time_limit_s = args.train_minutes * 60
    # A lighter search than the reference's halfcheetah setting (horizon 5, beam 32) keeps
    # three full 1000-step episodes to a few minutes on two cores.
    cfg.plan.horizon, cfg.plan.beam_width = args.horizon, args.beam_width
    run_dir = DEMO / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    t1 = time.time()
    train(cfg, run_dir)
    t_train = time.time() - t1

    console.rule("[bold]3. plan and evaluate")
    t2 = time.time()
    import torch

    torch.set_num_threads(1)  # planning runs many small ops: one thread is fastest on 2 cores
    ckpt = load_checkpoint(run_dir)
    result = run_episodes(
        ckpt, n_episodes=args.episodes, seed=args.seed, episode_steps=args.episode_steps
    )
    save_eval(result, DEMO / "eval", metrics=run_dir / "metrics.jsonl")
    t_eval = time.time() - t2

    actor = load_actor(builtin_actor("halfcheetah", "medium"))
    behaviour_return = actor.meta.get("mean_return")
    summary = result.summary()
    tt_returns = result.returns
    rows = {
        "behaviour policy (SAC medium actor)": behaviour_return,
        f"dataset mean ({episodes.n_episodes} episodes)": float(data_returns.mean()),
        f"trajplan TT ({len(tt_returns)} episodes)": float(np.mean(tt_returns)),
    }
    table = Table(title=f"HalfCheetah-v5, normalized with {summary['reference']}")
    table.add_column("policy")
    table.add_column("return", justify="right")
    table.add_column("normalized score", justify="right")
    for name, ret in rows.items():
        if ret is None:
            table.add_row(name, "?", "?")
            continue
        table.add_row(name, f"{ret:.1f}", f"{normalized_score(ret, ref_min, ref_max):.1f}")
    console.print(table)
    if args.episode_steps:
        console.print(f"[yellow]episodes capped at {args.episode_steps} steps: not comparable")
    console.print(f"outputs in {DEMO.relative_to(ROOT)}/ (run/, eval/)")
    figures = {
        "behaviour_score": None
        if behaviour_return is None
        else round(normalized_score(behaviour_return, ref_min, ref_max), 2),
        "dataset_score": round(normalized_score(float(data_returns.mean()), ref_min, ref_max), 2),
        "tt_score": round(normalized_score(float(np.mean(tt_returns)), ref_min, ref_max), 2),
        "tt_score_stderr": summary.get("score_stderr"),
        "data_s": round(t_data, 1),
        "train_s": round(t_train, 1),
        "eval_s": round(t_eval, 1),
        "total_s": round(time.time() - t0, 1),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
