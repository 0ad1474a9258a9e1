"""Benchmark training steps of the full HalfCheetah TT against an explicit-attention reference.

The model (--model) is the reference configuration by default (4 layers, 4 heads, width 128,
dropout 0.1; 17 obs + 6 act dims, 100 bins: 1,468,544 parameters, 249-token windows);
`recipe` is the CPU recipe's on HalfCheetah (3 layers, width 64, 4 transitions: 99 tokens),
`pointmaze` the same on PointMaze (8 dims: 31 tokens). One step = forward, weighted loss,
backward, grad-norm clip and AdamW on random tokens, in training mode (dropout on).
Variants, all with the same weights:

  explicit   the original design: masked softmax(QK^T / sqrt(d)) V with a float mask
             (`masked_fill(mask == 0, -inf)`), `nn.Dropout` everywhere (torch's bernoulli);
  sdpa       torch's scaled_dot_product_attention with dropout (on CPU: its math fallback);
  trajplan   the model in fp32 (train.amp false, or a CPU without native bf16): on CPU the
             blocked kernels of trajplan.model.kernels; on CUDA SDPA under bf16 autocast
             (and optionally torch.compile), as trained there;
  trajplan+bf16  (CPU) the same under bf16 autocast: how train.amp trains on a CPU with
             native bf16 (AVX512_BF16 or AMX; trajplan.training.loop.uses_bf16). Timed on any
             CPU (elsewhere bf16 is emulated: expect it slower); `native_bf16` says which.

Timing interleaves the variants step by step (a shared, busy machine slows all alike) and
reports the median. Peak memory: CPU = peak RSS of a fresh subprocess running two steps,
above its RSS before the first step; CUDA = torch.cuda.max_memory_allocated.

    python scripts/bench_train.py [--model reference] [--batch 64] [--steps 3] [--threads 1,2]
                                  [--compile]

CPU figures are given per thread count (default: 1 and torch's default): on a machine whose
cores are shared with other jobs, one thread is often the faster setting for every variant.
The headlines compare each variant at its best thread count: `cpu_speedup_vs_explicit`
(fp32 trajplan vs explicit) and `cpu_bf16_speedup_vs_fp32` (trajplan+bf16 vs trajplan).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from trajplan.config import ModelConfig
from trajplan.model.gpt import CausalSelfAttention, TrajectoryGPT
from trajplan.model.kernels import Dropout
from trajplan.training.loop import cpu_has_native_bf16

SMALL = dict(n_layer=3, n_head=4, n_embd=64)  # the CPU recipe's model (configs/cpu-recipe.yaml)
MODELS = {
    "reference": dict(obs_dim=17, act_dim=6, vocab_size=100, block_size=10 * 25 - 1),
    "recipe": dict(obs_dim=17, act_dim=6, vocab_size=100, block_size=4 * 25 - 1, **SMALL),
    "pointmaze": dict(obs_dim=4, act_dim=2, vocab_size=100, block_size=4 * 8 - 1, **SMALL),
}
CFG = dict(MODELS["reference"])  # --model replaces it
VARIANTS = ("explicit", "sdpa", "trajplan", "trajplan+bf16")


class ExplicitAttention(CausalSelfAttention):
    """The original code's attention: explicit scores, float mask, softmax, dropout, @ V."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mask, cache=None, layer=0, prefix=None):
        B, T, C = x.shape
        H = self.n_head
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))
        fmask = mask.float()  # the original keeps a float 0/1 buffer
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(fmask == 0, float("-inf"))
        att = self.attn_dropout(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.proj(y))


class SDPAAttention(CausalSelfAttention):
    """torch's fused attention with dropout in training (no trajplan kernels)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mask, cache=None, layer=0, prefix=None):
        B, T, C = x.shape
        H = self.n_head
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))
        p = self.attn_drop if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


def build(variant: str, device: torch.device) -> TrajectoryGPT:
    """The reference-size model with `variant`'s attention/dropout; the same weights for all."""
    cfg = ModelConfig(**CFG)
    torch.manual_seed(0)
    model = TrajectoryGPT(cfg)
    if variant not in ("trajplan", "trajplan+bf16"):
        attn_cls = ExplicitAttention if variant == "explicit" else SDPAAttention
        for block in model.blocks:
            new = attn_cls(cfg)
            new.load_state_dict(block.attn.state_dict())
            block.attn = new
        for mod in list(model.modules()):  # torch's own dropout (bernoulli_) everywhere
            for child_name, child in list(mod.named_children()):
                if isinstance(child, Dropout):
                    setattr(mod, child_name, nn.Dropout(child.p))
    return model.to(device).train()


class Stepper:
    """One training step of one variant on fixed random tokens."""

    def __init__(self, variant: str, device: torch.device, batch: int, compile_: bool) -> None:
        self.model = build(variant, device)
        bf16 = device.type == "cuda" or variant == "trajplan+bf16"
        self.net = torch.compile(self.model) if compile_ else self.model
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=6e-4, betas=(0.9, 0.95), fused=device.type == "cuda"
        )
        g = torch.Generator().manual_seed(1)
        T = CFG["block_size"]
        self.x = torch.randint(0, 101, (batch, T), generator=g).to(device)
        self.y = torch.randint(0, 101, (batch, T), generator=g).to(device)
        self.mask = torch.ones(batch, T, device=device)
        self.device = device
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def __call__(self) -> float:
        t0 = time.perf_counter()
        with self.autocast:
            _, loss = self.net(self.x, self.y, self.mask)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def time_variants(steppers: dict[str, Stepper], warmup: int, steps: int) -> dict[str, float]:
    """Median seconds per step, the variants interleaved step by step."""
    for _ in range(warmup):
        for step in steppers.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(steps):
        for name, step in steppers.items():
            times[name].append(step())
    return {name: statistics.median(t) for name, t in times.items()}


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def cpu_peak_child(variant: str, batch: int, threads: int, model: str) -> None:
    """(subprocess) Print the peak RSS over two steps, above the RSS before them, in MB."""
    torch.set_num_threads(threads)
    CFG.update(MODELS[model])
    step = Stepper(variant, torch.device("cpu"), batch, False)
    base = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark to now
        f.write("5")
    step()
    step()
    print(json.dumps({"peak_mb": round(_status_mb("VmHWM") - base, 1)}))


def cpu_peak_mb(variant: str, batch: int, threads: int, model: str) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--batch", str(batch)]
        + ["--threads", str(threads), "--model", model],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=tuple(MODELS), default="reference")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument(
        "--threads",
        default=None,
        help="comma-separated CPU thread counts to time (default: 1 and torch's default)",
    )
    ap.add_argument("--compile", action="store_true", help="also time torch.compile on CPU")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        cpu_peak_child(args.child, args.batch, int(args.threads or 1), args.model)
        return
    CFG.update(MODELS[args.model])
    default_threads = torch.get_num_threads()
    threads = (
        [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, default_threads})
    )
    console = Console()
    tokens = args.batch * CFG["block_size"]
    n_params = build("trajplan", torch.device("cpu")).num_params()
    native = cpu_has_native_bf16()
    console.print(
        f"TT ({args.model}): {n_params:,} parameters, batch {args.batch} x {CFG['block_size']} "
        f"tokens, dropout 0.1 (training mode); median of {args.steps} interleaved steps; "
        f"CPU bf16 {'native' if native else 'emulated (train.amp trains fp32 here)'}"
    )
    rows: list[tuple[str, str, float, float | None]] = []  # (device, variant, tok/s, MB)
    figures: dict[str, float | int | str | None] = {"model": args.model, "batch": args.batch}
    figures["native_bf16"] = int(native)
    peaks = {v: cpu_peak_mb(v, args.batch, 1, args.model) for v in VARIANTS}  # one thread

    cpu = torch.device("cpu")
    best: dict[str, float] = {}
    for n in threads:
        torch.set_num_threads(n)
        steppers = {v: Stepper(v, cpu, args.batch, False) for v in VARIANTS}
        if args.compile:
            steppers["trajplan+compile"] = Stepper("trajplan", cpu, args.batch, True)
        sec = time_variants(steppers, args.warmup, args.steps)
        del steppers
        for name, s in sec.items():
            rows.append((f"cpu x{n}", name, tokens / s, peaks.get(name)))
            key = name.replace("+", "_")
            figures[f"cpu{n}_{key}_tokens_per_s"] = round(tokens / s, 1)
            best[name] = max(best.get(name, 0.0), tokens / s)
        figures[f"cpu{n}_speedup_vs_explicit"] = round(sec["explicit"] / sec["trajplan"], 2)
        figures[f"cpu{n}_bf16_speedup_vs_fp32"] = round(sec["trajplan"] / sec["trajplan+bf16"], 2)
    torch.set_num_threads(default_threads)
    figures["cpu_tokens_per_s"] = round(best["trajplan"], 1)  # best thread count of each
    figures["cpu_explicit_tokens_per_s"] = round(best["explicit"], 1)
    figures["cpu_speedup_vs_explicit"] = round(best["trajplan"] / best["explicit"], 2)
    figures["cpu_bf16_tokens_per_s"] = round(best["trajplan+bf16"], 1)
    figures["cpu_bf16_speedup_vs_fp32"] = round(best["trajplan+bf16"] / best["trajplan"], 2)
    for v in VARIANTS:
        figures[f"cpu_{v.replace('+', '_')}_peak_mb"] = peaks[v]

    if torch.cuda.is_available():
        dev = torch.device("cuda")
        for name, compile_ in (("explicit", False), ("trajplan", False), ("trajplan", True)):
            label = name + ("+compile" if compile_ else "")
            torch.cuda.reset_peak_memory_stats()
            s = time_variants({label: Stepper(name, dev, args.batch, compile_)}, 3, 10)[label]
            peak = torch.cuda.max_memory_allocated() / 2**20
            rows.append(("cuda", label, tokens / s, round(peak, 1)))
            key = label.replace("+", "_")
            figures[f"cuda_{key}_tokens_per_s"] = round(tokens / s, 1)
            figures[f"cuda_{key}_peak_mb"] = round(peak, 1)

    table = Table(title=f"training step, batch {args.batch} (peak MB: one thread)")
    cols = ("device", "variant", "tokens/s", "ms/step", "vs explicit", "vs fp32", "peak MB")
    for col in cols:
        left = col in ("device", "variant")
        table.add_column(col, justify="left" if left else "right", no_wrap=col == "variant")
    base = {dev: tps for dev, name, tps, _ in rows if name == "explicit"}
    fp32 = {dev: tps for dev, name, tps, _ in rows if name == "trajplan"}
    for dev, name, tps, peak in rows:
        table.add_row(
            dev,
            name,
            f"{tps:,.0f}",
            f"{tokens / tps * 1000:.0f}",
            f"{tps / base[dev]:.2f}x",
            f"{tps / fp32[dev]:.2f}x" if name == "trajplan+bf16" else "",
            "-" if peak is None else f"{peak:.0f}",
        )
    console.print(table)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
