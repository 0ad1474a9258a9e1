"""The whole trajplan pipeline, offline, on a CPU: `make demo`.

1. data  -- a local mixed-quality dataset (the kind of data TT is for) from the env's bundled
            medium actor: on Hopper-v5 (the default; episodes end when it falls) each episode
            takes uniform random actions at its own rate drawn from U(0, 0.5) and adds Gaussian
            action noise of a std drawn from U(0, 0.5) (`trajplan data collect --mix-random
            0:0.5 --noise 0:0.5`); on HalfCheetah-v5 (`--env halfcheetah`) random actions at
            a rate from U(0, 1);
2. train -- the BC baseline (`trajplan bc`), return-weighted BC (`trajplan bc
            --action-weighting 2`: wBC) and the CPU recipe TT (config cpu-recipe:
            return-weighted action tokens, a schedule that ends with the run);
3. eval  -- all on the same full 1000-step episodes and seeds, TT planning with the recipe's
            horizon 5 / beam 32, alone and with wBC as its prior (`plan.prior`: the search's
            candidates are wBC's actions plus a little noise, scored by the model), over one
            worker process per core;
4. a table: dataset mean, BC, wBC, TT and TT with the prior, D4RL-normalized, mean +-
            stderr.

Everything goes under .demo/ (dataset, runs, eval JSON/PNG). Re-running reuses the dataset
and trains afresh; the last runs and scores are moved to .demo/previous-<time>/ first. The
last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / ".demo"
# how each env's demo data mixes its medium actor with random actions and noise (LO, HI)
MIXES = {
    "halfcheetah": {"random_rate": (0.0, 1.0), "noise": (0.0, 0.0)},
    "hopper": {"random_rate": (0.0, 0.5), "noise": (0.0, 0.5)},
}


def main(argv: list[str] | None = None) -> int:
    """The demo; Ctrl-C or SIGTERM stops it with one line and exit code 130 or 143 (each
    step saves what it can: a dataset is written whole or not at all, training checkpoints)."""
    from trajplan.runtime import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            return run_demo(argv)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as trajplan.runtime.Stopped
        signum = getattr(exc, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        print(f"demo stopped by {name}: run it again to start over", file=sys.stderr)
        return 128 + signum


def run_demo(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", choices=sorted(MIXES), default="hopper", help="env of the demo")
    ap.add_argument("--steps", type=int, default=100_000, help="steps of data to collect")
    ap.add_argument("--epochs", type=int, default=2, help="TT epochs over the data")
    ap.add_argument("--bc-steps", type=int, default=10_000, help="BC optimizer steps")
    ap.add_argument("--out", type=Path, default=DEMO, help="where the dataset, runs, eval go")
    ap.add_argument("--episodes", type=int, default=5, help="evaluation episodes")
    ap.add_argument("--episode-steps", type=int, default=None, help="cap episodes (quick look)")
    ap.add_argument("--config", default="cpu-recipe", help="a shipped config's name or a YAML file")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    demo = args.out
    dataset = f"trajplan-demo/{args.env}/mixed-v0"
    os.environ["MINARI_DATASETS_PATH"] = str(demo / "datasets")  # keep the user's folder clean
    import torch
    from rich.console import Console
    from rich.table import Table

    from trajplan.baselines.bc import BCConfig, train_bc
    from trajplan.behaviour.collect import collect
    from trajplan.configs import load_config
    from trajplan.data.transitions import load_episodes
    from trajplan.envs.references import references_for
    from trajplan.envs.registry import resolve_env
    from trajplan.evaluation.evalfiles import save_eval
    from trajplan.evaluation.evaluate import with_overrides
    from trajplan.evaluation.scores import stderr
    from trajplan.evaluation.workers import default_workers, evaluate_run
    from trajplan.runs.checkpoint import read_manifest
    from trajplan.training.loop import train

    console = Console()
    t0 = time.time()
    console.rule("[bold]1. data")
    if not (demo / "datasets" / dataset).exists():
        collect(args.env, "medium", args.steps, dataset, seed=args.seed, **MIXES[args.env])
    episodes = load_episodes(dataset)
    refs = references_for(args.env, episodes.ref_min, episodes.ref_max, "")
    data_scores = [refs.score(r) for r in episodes.returns()]
    console.print(
        f"{dataset}: {episodes.n_episodes} episodes, {episodes.n_steps} steps, normalized "
        f"score {sum(data_scores) / len(data_scores):.1f} (best episode {max(data_scores):.1f})"
    )
    t_data = time.time() - t0

    console.rule("[bold]2. train BC and TT")
    runs = demo / "runs"
    kept = keep_previous(demo)
    if kept is not None:
        console.print(f"the last demo's runs and scores moved to {kept}", highlight=False)
    # The recipe's small model trains faster on one thread than on two (measured on 2 cores:
    # ~29k vs ~17k tokens/s): per-op overhead, not arithmetic, bounds it.
    torch.set_num_threads(1)
    t1 = time.time()
    bc_run = train_bc(dataset, runs / "bc", BCConfig(steps=args.bc_steps, seed=args.seed))
    wbc_cfg = BCConfig(steps=args.bc_steps, seed=args.seed, action_weighting=2.0)
    wbc_run = train_bc(dataset, runs / "wbc", wbc_cfg)
    cfg = load_config(args.config)
    cfg.dataset, cfg.train.seed, cfg.train.epochs = dataset, args.seed, args.epochs
    tt_run = train(cfg, runs / "tt")
    t_train = time.time() - t1

    console.rule("[bold]3. evaluate on the same episodes")
    t2 = time.time()
    seeds = list(range(args.seed, args.seed + args.episodes))
    kw = dict(seeds=seeds, episode_steps=args.episode_steps, workers=default_workers())
    results = {
        name: evaluate_run(run, **kw)
        for name, run in (("BC", bc_run), ("wBC", wbc_run), ("TT", tt_run))
    }
    with_prior = with_overrides(read_manifest(tt_run)[0].plan, prior=str(wbc_run))
    results["TT+prior"] = evaluate_run(tt_run, **kw, plan_cfg=with_prior)
    for name, result in results.items():
        save_eval(result, demo / "eval" / name, metrics=Path(result.checkpoint) / "metrics.jsonl")
    t_eval = time.time() - t2

    def cell(mean: float, err: float | None) -> str:
        return f"{mean:.1f}" + ("" if err is None else f" ± {err:.1f}")

    import numpy as np

    gym_id = resolve_env(args.env).gym_id
    table = Table(title=f"{gym_id} mixed-quality data, {len(seeds)} episodes of each")
    for col in ("policy", "normalized score", "return"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    ds = np.array(data_scores)
    table.add_row(f"dataset mean ({len(ds)} episodes)", cell(ds.mean(), stderr(ds)), "")
    labels = {
        "BC": "behaviour cloning (MLP)",
        "wBC": "return-weighted BC",
        "TT": "trajplan TT (beam search)",
        "TT+prior": "trajplan TT, wBC as prior",
    }
    for name, result in results.items():
        s = result.summary()
        table.add_row(
            labels[name],
            cell(s["score_mean"], s["score_stderr"]),
            cell(s["return_mean"], s["return_stderr"]),
        )
    console.print(table)
    console.print(f"reference scores: {refs.describe()}", highlight=False)
    if args.episode_steps:
        console.print(f"[yellow]episodes capped at {args.episode_steps} steps: not comparable")
    console.print(f"outputs in {demo}/ (datasets/, runs/, eval/)", highlight=False)
    bc, tt = results["BC"].summary(), results["TT"].summary()
    wbc, ttp = results["wBC"].summary(), results["TT+prior"].summary()
    print(
        json.dumps(
            {
                "dataset_score": round(float(ds.mean()), 2),
                "bc_score": round(bc["score_mean"], 2),
                "bc_score_stderr": bc["score_stderr"],
                "tt_score": round(tt["score_mean"], 2),
                "tt_score_stderr": tt["score_stderr"],
                "wbc_score": round(wbc["score_mean"], 2),
                "wbc_score_stderr": wbc["score_stderr"],
                "tt_prior_score": round(ttp["score_mean"], 2),
                "tt_prior_score_stderr": ttp["score_stderr"],
                "data_s": round(t_data, 1),
                "train_s": round(t_train, 1),
                "eval_s": round(t_eval, 1),
                "total_s": round(time.time() - t0, 1),
            }
        )
    )
    return 0


def keep_previous(demo: Path) -> Path | None:
    """Move the last demo's runs/ and eval/ aside into demo/previous-<time>/ (a new demo
    trains afresh, and never deletes the last one's results); None when there were none."""
    old = [demo / name for name in ("runs", "eval") if (demo / name).exists()]
    if not old:
        return None
    from trajplan.runtime import unique_dir

    dest = unique_dir(demo, "previous-" + time.strftime("%Y%m%d-%H%M%S"))
    for path in old:
        path.rename(dest / path.name)
    return dest


if __name__ == "__main__":
    sys.exit(main())
