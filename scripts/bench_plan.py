"""Planning speed: ms per env step of the cached planner vs the reference full recompute.

HalfCheetah shapes (obs 17, act 6, N = 100; 4 layers, 4 heads, width 128, block 249),
random weights and random bin edges: the cost of planning does not depend on what the model
learned. Every plan starts from a full context (5 past transitions), so the window slides
exactly as in the middle of an episode. Configs: horizon 5 / beam 32 (halfcheetah medium)
and horizon 15 / beam 128 (the default); also the "grow" window option at horizon 5 (no
slide inside a plan: not the reference semantics) and 10 episodes planned as one batch.

The full recompute at horizon 15 / beam 128 takes minutes per env step; unless --full-all is
given, it is timed for horizons 1 and 2 (same beam, same window lengths) and extrapolated:
t(H) = t(1) + (H - 1) * (t(2) - t(1)), since every planned step but the last costs the same.

Usage: python scripts/bench_plan.py [--device cpu|cuda] [--threads N] [--steps 3]
The last line of stdout is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from trajplan.config import ModelConfig, PlanConfig
from trajplan.data.tokens import Discretizer
from trajplan.model.gpt import TrajectoryGPT
from trajplan.planner import Planner

OBS, ACT, N = 17, 6, 100
D = OBS + ACT + 2


def make_planner(cfg: PlanConfig, device: torch.device, n_envs: int = 1) -> Planner:
    torch.manual_seed(0)
    mcfg = ModelConfig(obs_dim=OBS, act_dim=ACT, vocab_size=N, block_size=10 * D - 1)
    model = TrajectoryGPT(mcfg).to(device).eval()
    rng = np.random.default_rng(0)
    disc = Discretizer(np.sort(rng.normal(size=(N + 1, D)), axis=0), N)
    planner = Planner(model, disc, cfg, device)
    planner.reset(n_envs, list(range(n_envs)))
    for _ in range(cfg.max_context_transitions):  # a full context, as mid-episode
        planner.observe(*random_step(rng, n_envs))
    return planner


def random_step(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return rng.normal(size=(n, OBS)), rng.uniform(-1, 1, (n, ACT)), rng.normal(size=n)


def ms_per_step(
    cfg: PlanConfig, device: torch.device, steps: int, n_envs: int = 1
) -> tuple[float, float]:
    """Mean (wall, process CPU) ms of `steps` env steps (one plan each), per episode.

    steps = 0 times a single plan with no warm-up; otherwise one warm-up plan runs first.
    Process CPU time is the steadier figure on a shared machine (it excludes time spent
    waiting for a core), wall time is what a user sees.
    """
    planner = make_planner(cfg, device, n_envs)
    rng = np.random.default_rng(1)
    wall, cpu = [], []
    for i in range(max(steps, 0) + 1):
        obs, _, rew = random_step(rng, n_envs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        act = planner.act(obs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0 or steps == 0:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        planner.observe(obs, act, rew)
        if steps == 0:
            break
    return 1000.0 * float(np.mean(wall)) / n_envs, 1000.0 * float(np.mean(cpu)) / n_envs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--steps", type=int, default=4, help="timed cached steps per config")
    ap.add_argument("--full-all", action="store_true", help="time the whole h15 full plan")
    ap.add_argument("--quick", action="store_true", help="horizon 5 / beam 32 only")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    console = Console(stderr=True)
    fig: dict[str, float | str | bool | int] = {
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    rows = []

    def run(name: str, cfg: PlanConfig, extrapolate: bool) -> None:
        console.print(f"[dim]{name}: cached ...")
        cached = ms_per_step(cfg, device, args.steps)
        console.print(f"[dim]{name}: full ...")
        full_cfg = dataclasses.replace(cfg, mode="full")
        if extrapolate:
            t1 = ms_per_step(dataclasses.replace(full_cfg, horizon=1, plan_freq=1), device, 0)
            t2 = ms_per_step(dataclasses.replace(full_cfg, horizon=2, plan_freq=1), device, 0)
            full = tuple(a + (cfg.horizon - 1) * (b - a) for a, b in zip(t1, t2, strict=True))
        else:
            full = ms_per_step(full_cfg, device, 0)
        console.print(f"[dim]{name}: cached again ...")  # load on a shared machine drifts
        again = ms_per_step(cfg, device, args.steps)
        cached = tuple((a + b) / 2 for a, b in zip(cached, again, strict=True))
        for kind, i in (("", 0), ("cpu_", 1)):
            fig[f"{name}_cached_{kind}ms_per_step"] = round(cached[i], 1)
            fig[f"{name}_full_{kind}ms_per_step"] = round(full[i], 1)
            fig[f"{name}_{kind}speedup_x"] = round(full[i] / cached[i], 1)
        fig[f"{name}_full_extrapolated"] = extrapolate
        rows.append((name, cached, full, extrapolate))

    run("h5_b32", PlanConfig(horizon=5, beam_width=32), extrapolate=False)
    console.print("[dim]h5_b32: cached, grow window ...")
    grow = ms_per_step(PlanConfig(horizon=5, beam_width=32, window="grow"), device, args.steps)
    fig["h5_b32_grow_cached_ms_per_step"] = round(grow[0], 1)
    fig["h5_b32_grow_cached_cpu_ms_per_step"] = round(grow[1], 1)
    if not args.quick:
        run("h15_b128", PlanConfig(horizon=15, beam_width=128), extrapolate=not args.full_all)
        console.print("[dim]h5_b32: cached, 10 episodes batched ...")
        batched = ms_per_step(PlanConfig(horizon=5, beam_width=32), device, 1, n_envs=10)
        fig["h5_b32_cached_10envs_ms_per_env_step"] = round(batched[0], 1)

    table = Table(title=f"trajplan planning, HalfCheetah shapes, {device}, "
                  f"{fig['threads']} threads (wall ms / CPU ms per env step)")  # fmt: skip
    for col in ("config", "cached", "full", "speedup wall", "speedup CPU"):
        table.add_column(col, justify="right")
    for name, cached, full, extra in rows:
        table.add_row(
            name,
            f"{cached[0]:,.0f} / {cached[1]:,.0f}",
            f"{full[0]:,.0f} / {full[1]:,.0f}" + (" (extrapolated)" if extra else ""),
            f"{full[0] / cached[0]:.1f}x",
            f"{full[1] / cached[1]:.1f}x",
        )
    full5 = rows[0][2]
    table.add_row(
        "h5_b32, grow window (not the reference)",
        f"{grow[0]:,.0f} / {grow[1]:,.0f}",
        "",
        f"{full5[0] / grow[0]:.1f}x",
        f"{full5[1] / grow[1]:.1f}x",
    )
    if "h5_b32_cached_10envs_ms_per_env_step" in fig:
        ms = fig["h5_b32_cached_10envs_ms_per_env_step"]
        table.add_row("h5_b32, 10 episodes batched", f"{ms:,.0f}", "", "", "")
    Console(width=120).print(table)
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
