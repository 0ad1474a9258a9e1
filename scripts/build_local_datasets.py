"""Build D4RL-style Minari datasets for one env from a behaviour run of train_behavior.py.

    python scripts/build_local_datasets.py --env hopper --run runs/behavior/hopper \
        --steps 100000 --assets

creates, in $MINARI_DATASETS_PATH (default ~/.minari/datasets):
  NS/ENV/random-v0         the random policy
  NS/ENV/medium-v0         the run's medium actor (first eval above its target return)
  NS/ENV/expert-v0         the run's best actor
  NS/ENV/medium-replay-v0  the SAC replay buffer up to the medium checkpoint
and NS/ENV/medium-expert-v0 loads as medium + expert (trajplan.data.transitions splits the id).
`--medium-step N` picks actors/step_N as medium instead (and cuts the replay there).
`--assets` re-evaluates the medium / expert actors among --levels on fresh seeds and copies
them to trajplan/assets/.

Prints a table of the datasets and, as the last line, a JSON object of figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from trajplan.behaviour.collect import collect, episode_returns, from_replay
from trajplan.behaviour.policies import ActorPolicy
from trajplan.data.transitions import load_episodes
from trajplan.envs.references import normalized_score
from trajplan.envs.registry import resolve_env
from trajplan.model.actor import load_actor, save_actor

console = Console(width=max(Console().width, 110))  # dataset ids are long
ASSETS = Path(__file__).resolve().parents[1] / "trajplan" / "assets"
EVAL_SEED = 5_000_000  # fresh seeds: neither the training evaluations nor the datasets use them


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", required=True, help="short env name, e.g. hopper")
    p.add_argument("--run", type=Path, required=True, help="output folder of train_behavior.py")
    p.add_argument("--steps", type=int, default=100_000, help="steps per collected dataset")
    p.add_argument("--namespace", default="local", help="dataset ids are NS/ENV/LEVEL-v0")
    p.add_argument("--levels", default="random,medium,expert,medium-replay")
    p.add_argument("--medium-step", type=int, default=None, help="use actors/step_N as medium")
    p.add_argument("--seed", type=int, default=0, help="first episode seed of each dataset")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes for --assets")
    p.add_argument("--assets", action="store_true", help="evaluate and copy actors to assets/")
    p.add_argument("--force", action="store_true", help="replace existing datasets")
    args = p.parse_args(argv)

    info = resolve_env(args.env)
    run: Path = args.run
    if args.medium_step is not None:
        medium = run / "actors" / f"step_{args.medium_step}.actor.safetensors"
        replay, replay_steps = run / "replay_final.npz", args.medium_step
    else:
        medium = run / f"{info.name}-medium.actor.safetensors"
        replay, replay_steps = run / "replay_medium.npz", None
    actors = {"medium": medium, "expert": run / f"{info.name}-expert.actor.safetensors"}
    figures: dict[str, float] = {}

    levels = args.levels.split(",")
    if args.assets:
        for level, path in actors.items():
            if level not in levels:
                continue
            actor = load_actor(path)
            rets = episode_returns(info.name, ActorPolicy(actor), args.eval_episodes, EVAL_SEED)
            err = float(rets.std(ddof=1) / np.sqrt(len(rets)))
            actor.meta.update(
                level=level,
                algorithm_name=f"sac-{level}",
                mean_return=float(rets.mean()),
                return_stderr=err,
                eval_episodes=len(rets),
                eval_seed=EVAL_SEED,
            )
            save_actor(actor, ASSETS / f"{info.name}-{level}.actor.safetensors")
            console.print(
                f"{level}: step {actor.meta['training_steps']}, return "
                f"{rets.mean():.1f} +- {err:.1f} over {len(rets)} episodes"
            )
            figures[f"{level}_return"] = round(float(rets.mean()), 1)
            figures[f"{level}_return_stderr"] = round(err, 1)

    table = Table(title=f"local datasets for {info.gym_id}")
    for col in ("dataset", "episodes", "steps", "mean return", "score", "build s"):
        table.add_column(col, justify="left" if col == "dataset" else "right", no_wrap=True)
    for level in levels:
        ds_id = f"{args.namespace}/{info.name}/{level}-v0"
        t0 = time.perf_counter()
        if level == "medium-replay":
            from_replay(
                info.name,
                replay,
                ds_id,
                max_steps=replay_steps,
                force=args.force,
                algorithm_name="sac-medium-replay",
            )
        else:
            policy = "random" if level == "random" else str(actors[level])
            collect(info.name, policy, args.steps, ds_id, seed=args.seed, force=args.force)
        build_s = time.perf_counter() - t0
        ep = load_episodes(ds_id)
        # mean over whole episodes: drop only the last one when --steps cut it short
        full = ep.returns()[~ep.truncations[ep.starts + ep.lengths - 1] | (ep.lengths >= 1000)]
        mean = float(full.mean()) if len(full) else float("nan")
        score = normalized_score(mean, info.ref_min, info.ref_max)
        table.add_row(
            ds_id,
            str(ep.n_episodes),
            str(ep.n_steps),
            f"{mean:.1f}",
            f"{score:.1f}",
            f"{build_s:.1f}",
        )
        figures[f"{level}_dataset_return"] = round(mean, 1) if len(full) else None
        figures[f"{level}_dataset_steps"] = ep.n_steps
        figures[f"{level}_build_s"] = round(build_s, 1)
    console.print(table)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
