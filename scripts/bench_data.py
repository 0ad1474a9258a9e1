"""Benchmark the data pipeline on a synthetic 1M-step Minari dataset.

Writes 1000 HalfCheetah-shaped episodes (17 obs / 6 act dims) of 1000 steps as a real Minari
dataset in a temporary directory (one in ten ends in a termination), then times each stage of
`trajplan.data.transitions.prepare` separately and the whole call end to end. Prints a rich
table and, as the last line, one JSON object of the figures.

    python scripts/bench_data.py [--episodes 1000] [--steps 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table


def synthetic_episodes(n_episodes: int, n_steps: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n_episodes):
        terminated = i % 10 == 9
        episodes.append(
            {
                "observations": rng.standard_normal((n_steps + 1, 17)),
                "actions": rng.uniform(-1, 1, (n_steps, 6)).astype(np.float32),
                "rewards": rng.standard_normal(n_steps),
                "terminations": np.arange(n_steps) == n_steps - 1
                if terminated
                else np.zeros(n_steps, bool),
                "truncations": np.zeros(n_steps, bool)
                if terminated
                else np.arange(n_steps) == n_steps - 1,
            }
        )
    return episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as root:
        os.environ["MINARI_DATASETS_PATH"] = root
        from trajplan.config import DataConfig
        from trajplan.data.tokens import Discretizer
        from trajplan.data.transitions import (
            WindowDataset,
            create_dataset,
            load_episodes,
            make_transitions,
            prepare,
        )

        cfg = DataConfig()
        dataset_id = "bench/halfcheetah/synthetic-v0"
        t0 = time.perf_counter()
        episodes = synthetic_episodes(args.episodes, args.steps)
        create_dataset(dataset_id, episodes, "HalfCheetah-v5", algorithm_name="synthetic")
        del episodes
        fig: dict[str, float | int] = {"write_s": time.perf_counter() - t0}

        t = time.perf_counter()
        ep = load_episodes(dataset_id)
        fig["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        trans = make_transitions(ep, cfg)
        fig["values_s"] = time.perf_counter() - t
        t = time.perf_counter()
        disc = Discretizer.fit(trans, cfg.n_bins, cfg.discretizer)
        fig["fit_s"] = time.perf_counter() - t
        t = time.perf_counter()
        windows = WindowDataset.from_step_tokens(
            disc.discretize(trans), ep.lengths, cfg.seq_len, cfg.max_path_length, disc.stop_token
        )
        fig["tokenize_s"] = time.perf_counter() - t
        fig["stages_total_s"] = sum(fig[k] for k in ("load_s", "values_s", "fit_s", "tokenize_s"))
        del ep, trans, windows

        t = time.perf_counter()
        data = prepare(dataset_id, cfg)
        fig["prepare_total_s"] = time.perf_counter() - t

        gen = torch.Generator().manual_seed(0)
        idx = [torch.randint(len(data.windows), (256,), generator=gen) for _ in range(50)]
        threads = torch.get_num_threads()
        for name, n_threads in (("batch256_ms", threads), ("batch256_1thread_ms", 1)):
            # a batch is tiny: with busy cores, intra-op threads mostly wait for each other
            torch.set_num_threads(n_threads)
            t = time.perf_counter()
            for i in idx:
                data.windows.get_batch(i)
            fig[name] = 1000 * (time.perf_counter() - t) / len(idx)
        torch.set_num_threads(threads)
        fig["token_storage_mb"] = (
            data.windows.tokens.numel() * data.windows.tokens.element_size() / 2**20
        )
        fig["steps"] = int(data.episodes.n_steps)
        fig["windows"] = int(data.windows.n_windows)

    table = Table(
        title=f"trajplan data pipeline: {fig['steps']:,} steps, {torch.get_num_threads()} threads"
    )
    table.add_column("stage")
    table.add_column("value", justify="right")
    for k, v in fig.items():
        table.add_row(k, f"{v:,.3f}" if isinstance(v, float) else f"{v:,}")
    Console(stderr=True).print(table)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in fig.items()}))


if __name__ == "__main__":
    main()
