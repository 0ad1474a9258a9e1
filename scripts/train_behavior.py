"""Train a SAC or TD3 behaviour policy (stable-baselines3) and export actors for collection.

D4RL-style datasets need behaviour policies of known quality: `medium` is the first
checkpoint whose deterministic return crosses --export-at-return, `expert` the best one seen,
and `medium-replay` the transitions in the replay buffer up to the medium checkpoint.

    python scripts/train_behavior.py --env halfcheetah --steps 200000 \
        --export-at-return 4000 --out runs/behavior/halfcheetah

Writes into --out:
  metrics.jsonl            one row per evaluation (steps, wall time, steps/s, returns)
  curve.png                eval return vs steps (redrawn after every evaluation)
  checkpoints/step_N.zip   SB3 models every --checkpoint-every steps (and the final one)
  actors/step_N.actor.safetensors  the exported actor at every evaluation
  <env>-medium.actor.safetensors, replay_medium.npz   at the first crossing of the target
  <env>-expert.actor.safetensors   the best evaluation so far
  replay_final.npz         every transition of the run
Replay files hold arrays observations, next_observations, actions (in env units), rewards,
terminations, truncations, in collection order (episodes are consecutive).

Needs the `sb3` extra (pip install "trajplan[sb3]").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from trajplan.behaviour.policies import ActorPolicy, play_policy
from trajplan.envs.registry import make_env, resolve_env
from trajplan.evaluation.scores import stderr
from trajplan.model.actor import Actor, actor_from_sb3, save_actor

console = Console()


def evaluate(actor: Actor, env_name: str, episodes: int, seed: int) -> tuple[float, float, float]:
    """Mean return, its standard error and the mean length of deterministic episodes."""
    played = play_policy(ActorPolicy(actor), env_name, range(seed, seed + episodes))
    rets = np.asarray([ep.ret for ep in played])
    return float(rets.mean()), stderr(rets) or 0.0, float(np.mean([ep.length for ep in played]))


def dump_replay(model, path: Path) -> int:
    """Save the replay buffer's transitions so far (collection order, env action units)."""
    buf = model.replay_buffer
    n = buf.buffer_size if buf.full else buf.pos
    if buf.full:
        raise RuntimeError("replay buffer wrapped around: raise --buffer-size to keep all data")
    space = model.action_space
    scaled = buf.actions[:n, 0]  # SB3 stores squashed actions in [-1, 1]
    actions = space.low + 0.5 * (scaled + 1.0) * (space.high - space.low)
    timeouts = buf.timeouts[:n, 0].astype(bool)
    dones = buf.dones[:n, 0].astype(bool)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        observations=buf.observations[:n, 0].astype(np.float32),
        next_observations=buf.next_observations[:n, 0].astype(np.float32),
        actions=actions.astype(np.float32),
        rewards=buf.rewards[:n, 0].astype(np.float32),
        terminations=dones & ~timeouts,
        # the end of the last, unfinished episode counts as a truncation
        truncations=timeouts | ((np.arange(n) == n - 1) & ~dones),
    )
    os.replace(tmp, path)
    return n


def restore_replay(model, path: Path) -> int:
    """Refill a fresh SB3 replay buffer from a file of `dump_replay` (for --resume)."""
    with np.load(path) as z:
        n = len(z["rewards"])
        buf = model.replay_buffer
        buf.observations[:n, 0] = z["observations"]
        buf.next_observations[:n, 0] = z["next_observations"]
        buf.actions[:n, 0] = model.policy.scale_action(z["actions"])
        buf.rewards[:n, 0] = z["rewards"]
        buf.dones[:n, 0] = z["terminations"] | z["truncations"]
        buf.timeouts[:n, 0] = z["truncations"]
    buf.pos = n
    return n


def plot_curve(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in rows])
    mean = np.array([r["eval_return_mean"] for r in rows])
    err = np.array([r["eval_return_stderr"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, mean, marker="o", ms=3)
    ax.fill_between(steps, mean - err, mean + err, alpha=0.3)
    ax.set(xlabel="environment steps", ylabel="deterministic eval return", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", default="halfcheetah", help="short name or Gymnasium id")
    p.add_argument(
        "--algo",
        choices=["sac", "td3"],
        default="sac",
        help="SB3 algorithm (TD3 is about twice as fast per step on a CPU)",
    )
    p.add_argument("--steps", type=int, default=200_000, help="environment steps to train")
    p.add_argument("--eval-every", type=int, default=10_000, help="steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    p.add_argument("--checkpoint-every", type=int, default=25_000, help="steps between SB3 saves")
    p.add_argument(
        "--export-at-return",
        type=float,
        default=None,
        help="export the first actor whose eval return crosses this as `medium`",
    )
    p.add_argument("--learning-starts", type=int, default=10_000, help="random steps first")
    p.add_argument("--buffer-size", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--nice", type=int, default=10, help="raise the process niceness by this")
    p.add_argument("--out", type=Path, default=None, help="output folder (runs/behavior/ENV)")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="continue a run to --steps: OUT/checkpoints/step_N.zip; the replay buffer is "
        "refilled from OUT/replay_final.npz",
    )
    args = p.parse_args(argv)

    try:
        from stable_baselines3 import SAC, TD3
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.noise import NormalActionNoise
    except ImportError:
        console.print('[red]stable-baselines3 is missing: pip install "trajplan[sb3]"[/]')
        return 2

    if args.nice:
        os.nice(args.nice)
    torch.set_num_threads(args.threads)
    info = resolve_env(args.env)
    algo = {"sac": SAC, "td3": TD3}[args.algo]
    name = args.algo.upper()
    out: Path = args.out or Path("runs/behavior") / info.name
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "actors").mkdir(exist_ok=True)
    eval_seed = 1_000_000 + 1000 * args.seed

    if args.resume is None:
        (out / "args.json").write_text(
            json.dumps({**vars(args), "out": str(out)}, indent=1, default=str)
        )
        env = make_env(info.name, seed=args.seed)
        extra = {}
        if args.algo == "td3":  # exploration noise of the TD3 paper: N(0, 0.1) in [-1, 1] units
            n = env.action_space.shape[0]
            extra["action_noise"] = NormalActionNoise(np.zeros(n), 0.1 * np.ones(n))
        model = algo(
            "MlpPolicy",
            env,
            learning_starts=args.learning_starts,
            buffer_size=args.buffer_size,
            seed=args.seed,
            device="cpu",
            verbose=0,
            **extra,
        )
    else:
        model = algo.load(args.resume, device="cpu")
        env = make_env(info.name, seed=args.seed + model.num_timesteps)  # fresh episodes
        model.set_env(env)
        kept = restore_replay(model, out / "replay_final.npz")
        console.print(f"resumed at step {model.num_timesteps} with {kept} replay transitions")
    start_step = model.num_timesteps

    class Tracker(BaseCallback):
        """Progress bar, periodic evaluation, exports and checkpoints."""

        def __init__(self, progress: Progress) -> None:
            super().__init__()
            self.progress = progress
            self.task = progress.add_task(name, total=args.steps, completed=start_step)
            metrics = out / "metrics.jsonl"
            lines = metrics.read_text().splitlines() if args.resume and metrics.exists() else []
            self.rows: list[dict] = [json.loads(line) for line in lines]
            self.t0 = time.perf_counter()
            self.best = max((r["eval_return_mean"] for r in self.rows), default=-np.inf)
            medium = out / f"{info.name}-medium.actor.safetensors"
            self.medium_done = args.export_at_return is None or (
                args.resume is not None and medium.exists()
            )

        def _on_step(self) -> bool:
            n = self.num_timesteps
            if n % 250 == 0:
                self.progress.update(self.task, completed=n)
            if n % args.eval_every == 0 or n == args.steps:
                self.evaluate(n)
            if n % args.checkpoint_every == 0 or n == args.steps:
                self.model.save(out / "checkpoints" / f"step_{n}.zip")
            return True

        def evaluate(self, n: int) -> None:
            wall = time.perf_counter() - self.t0
            meta = {
                "env_id": info.gym_id,
                "env_name": info.name,
                "training_steps": n,
                "seed": args.seed,
                "algorithm": f"{args.algo} (stable-baselines3)",
            }
            actor = actor_from_sb3(self.model, meta)
            mean, err, length = evaluate(actor, info.name, args.eval_episodes, eval_seed)
            eps = [e["r"] for e in self.model.ep_info_buffer]
            row = {
                "step": n,
                "wall_s": round(wall, 1),
                "steps_per_s": round((n - start_step) / wall, 2),
                "eval_return_mean": round(mean, 2),
                "eval_return_stderr": round(err, 2),
                "eval_len_mean": length,
                "eval_episodes": args.eval_episodes,
                "train_return_mean": round(float(np.mean(eps)), 2) if eps else None,
            }
            self.rows.append(row)
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            plot_curve(self.rows, out / "curve.png", f"{name} on {info.gym_id}")
            actor.meta.update(mean_return=mean, return_stderr=err, eval_episodes=args.eval_episodes)
            save_actor(actor, out / "actors" / f"step_{n}.actor.safetensors")
            note = ""
            if mean > self.best:
                self.best = mean
                actor.meta.update(level="expert", algorithm_name=f"{args.algo}-expert")
                save_actor(actor, out / f"{info.name}-expert.actor.safetensors")
                note += " best"
            if not self.medium_done and mean >= args.export_at_return:
                self.medium_done = True
                actor.meta.update(level="medium", algorithm_name=f"{args.algo}-medium")
                save_actor(actor, out / f"{info.name}-medium.actor.safetensors")
                kept = dump_replay(self.model, out / "replay_medium.npz")
                note += f" medium (replay {kept} transitions)"
            self.progress.console.print(
                f"step {n:>7}  return {mean:8.1f} +- {err:6.1f}  len {length:6.1f}  "
                f"{(n - start_step) / wall:6.1f} steps/s{note}"
            )
            self.progress.update(self.task, description=f"{name}  eval {mean:.0f}")

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        model.learn(
            total_timesteps=args.steps - start_step,
            callback=Tracker(progress),
            reset_num_timesteps=args.resume is None,
        )
    kept = dump_replay(model, out / "replay_final.npz")
    console.print(f"done: {kept} transitions in {out / 'replay_final.npz'}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: r["eval_return_mean"])
    print(
        json.dumps(
            {
                "steps": args.steps,
                "best_return": best["eval_return_mean"],
                "best_step": best["step"],
                "steps_per_s": rows[-1]["steps_per_s"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
