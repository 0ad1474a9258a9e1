"""One decoding step: `decode_step` (the planner's fused copy of the block) against the
model's own blocks with a cache (`Block.forward(x, mask, cache, layer, prefix)`, what
`forward_shared` runs for n > 1), per token, on random weights.

It answers one question (issue 32): can the planner decode through the one block, so the
block arithmetic lives once? Three shapes: the maze recipe (3 layers, width 64, 64 rows),
the CPU recipe (4 layers, width 128, Hopper, 64 rows) and the reference (HalfCheetah,
4 layers, width 128, 256 rows = beam 128 x 2), each after a 3-transition shared prefix,
decoding two transitions' tokens per row (the cache positions a plan fills).

Usage: python scripts/bench_decode.py [--threads 1] [--repeats 15] [--device cpu|cuda]
Prints a table, then one JSON object of the figures (microseconds per token, best of the
repeats, and their ratio).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from rich.console import Console
from rich.table import Table

from trajplan.config import ModelConfig
from trajplan.model import decoding as dec
from trajplan.model.gpt import TrajectoryGPT

# name -> (layers, heads, width, obs dims, act dims, rows)
SHAPES = {
    "maze_recipe": (3, 4, 64, 4, 2, 64),
    "cpu_recipe": (4, 4, 128, 11, 3, 64),
    "reference": (4, 4, 128, 17, 6, 256),
}


def block_step(model: TrajectoryGPT, tok: torch.Tensor, prefix, cache) -> torch.Tensor:
    """One token per row [R, 1] through the model's blocks with the cache: the general path."""
    own = cache.length
    start = prefix.length + own
    x = model._embed(tok, start - model.goal_offset)
    mask = model.mask[start : start + 1, : start + 1]
    for i, block in enumerate(model.blocks):
        x = block(x, mask, cache, i, prefix)
    cache.length = own + 1
    return model._head(model.ln_f(x), start - model.goal_offset)


def time_shape(shape: tuple, repeats: int, device: torch.device) -> tuple[float, float]:
    """Best-of-repeats microseconds per token: (decode_step, the blocks)."""
    n_layer, n_head, n_embd, obs, act, rows = shape
    D = obs + act + 2
    cfg = ModelConfig(obs_dim=obs, act_dim=act, vocab_size=100, block_size=10 * D - 1,
                      n_layer=n_layer, n_head=n_head, n_embd=n_embd, dropout=0.0)  # fmt: skip
    torch.manual_seed(0)
    model = TrajectoryGPT(cfg).to(device).eval()
    steps = 2 * D - 1
    toks = torch.randint(0, 100, (steps, rows, 1), device=device)
    with torch.no_grad():
        prefix = dec.new_cache(model, 1)
        dec.forward_cached(model, torch.randint(0, 100, (1, 3 * D), device=device), prefix)
        params = dec.decode_params(model)

        def run(fused: bool) -> float:
            cache = dec.new_cache(model, rows, capacity=2 * D)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for j in range(steps):
                if fused:
                    dec.decode_step(model, toks[j, :, 0], prefix, cache, params)
                else:
                    block_step(model, toks[j], prefix, cache)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return (time.perf_counter() - t0) / steps * 1e6

        for _ in range(3):  # warm-up
            run(True), run(False)
        fused = min(run(True) for _ in range(repeats))
        blocks = min(run(False) for _ in range(repeats))
    return fused, blocks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (planning uses 1)")
    ap.add_argument("--repeats", type=int, default=15, help="timed runs per path (best is kept)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    table = Table(title=f"one decoding step, {args.device}, {args.threads} thread(s)")
    for col in ("shape", "rows", "decode_step us/token", "blocks us/token", "blocks / decode_step"):
        table.add_column(col, justify="right" if col != "shape" else "left")
    figures: dict[str, float | str] = {"device": args.device, "threads": args.threads}
    for name, shape in SHAPES.items():
        fused, blocks = time_shape(shape, args.repeats, device)
        ratio = blocks / fused
        table.add_row(name, str(shape[-1]), f"{fused:.0f}", f"{blocks:.0f}", f"{ratio:.2f}")
        figures[f"{name}_decode_step_us_per_token"] = round(fused, 1)
        figures[f"{name}_blocks_us_per_token"] = round(blocks, 1)
        figures[f"{name}_blocks_over_decode_step"] = round(blocks / fused, 3)
    Console().print(table)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
