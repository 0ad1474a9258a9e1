"""CPU training kernels: masked attention with dropout, and dropout, without the slow paths.

On CPU, `scaled_dot_product_attention` with dropout falls back to its math path: it
materialises [B, H, T, T] scores, rebuilds a float mask from the boolean one, runs a "safe"
softmax (extra passes to find fully masked rows) and draws the dropout mask with
`bernoulli_`. At the reference shapes (B 64, H 4, T 249) that is ~16M elements per
layer, touched a dozen times, from main memory (docs/benchmarks.md has the speedup).
`blocked_attention` does the same arithmetic in small batches of heads so every pass stays
in cache, skips the key blocks that the causal mask hides entirely, keeps the softmax
probabilities for the backward pass, and draws dropout masks from 64-bit random integers
(four 16-bit draws each).

Dropout here keeps an element when a uniform 16-bit draw is >= round(p * 65536): the
drop probability is p rounded to a multiple of 1/65536 (0.1 -> 0.100006), scaled by
1 / (1 - p) like `F.dropout`. The random stream differs from PyTorch's own dropout (same
distribution, different draws).

Threads: the chunks are spread over `torch.get_num_threads()` Python worker threads, each
running single-threaded torch ops (which release the GIL), instead of splitting every small
op across OpenMP threads. On a machine whose cores are busy with other jobs, an OpenMP
barrier per small op waits for a descheduled thread each time (docs/benchmarks.md);
whole chunks per thread do not. Every chunk draws its dropout mask from its
own generator, seeded from the torch RNG, so results do not depend on thread timing.

Under CPU autocast (train.amp on a CPU with native bf16) q, k and v arrive in bf16: the
kernel keeps the probabilities and computes its products in bf16 (the products accumulate
in fp32 inside oneDNN). Autocast itself is switched off inside the kernel: it is per thread,
so it would apply to the chunks run on the calling thread and not to the workers'. Dropout
keeps the input's dtype and draws the same mask in any dtype.

Only the training forward/backward of the full window uses these (see model.py); the
planner's cached decoding and every CUDA path keep `scaled_dot_product_attention`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

_LEVELS = 1 << 16
# Scores per chunk of heads ([chunk, T, T] elements): 8 heads at the reference's 249 tokens.
# Shorter windows take more heads per chunk (all 256 of a batch of 64 at the CPU recipe's
# PointMaze windows of 31 tokens): 8 heads of a short window are too little work per op,
# and Python's per-op and per-chunk overhead made the kernel slower than the explicit
# formula there (docs/benchmarks.md, "bf16 autocast on CPU").
CHUNK_SCORES = 8 * 250 * 250


def keep_mask(
    shape: tuple[int, ...],
    p: float,
    out: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bool tensor, True with probability 1 - p (p resolved to 1/65536), from the torch RNG."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64)
    words.random_(-(2**63), 2**63 - 1, generator=generator)
    draws = words.view(torch.int16)[:n].view(shape)  # uniform over -32768..32767
    threshold = round(p * _LEVELS) - _LEVELS // 2
    return torch.ge(draws, threshold, out=out) if out is not None else draws >= threshold


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = keep_mask(tuple(x.shape), p)
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return x * keep.view(torch.uint8).to(x.dtype) * ctx.scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return grad * keep.view(torch.uint8).to(grad.dtype) * ctx.scale, None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout` with the cheaper mask above on CPU (same distribution, other draws)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not 0.0 < p < 1.0:
        return torch.nn.functional.dropout(x, p, training)
    return _Dropout.apply(x, p)


_pools: dict[int, ThreadPoolExecutor] = {}
_pool_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """A persistent pool of `workers` threads that run torch ops with one intra-op thread."""
    with _pool_lock:
        if workers not in _pools:
            main_threads = torch.get_num_threads()
            pool = ThreadPoolExecutor(workers, "trajplan-kernel", torch.set_num_threads, (1,))
            ready = threading.Barrier(workers + 1)
            for _ in range(workers):  # start every worker now (runs the initializer)
                pool.submit(ready.wait)
            ready.wait()
            torch.set_num_threads(main_threads)  # the initializers changed torch's default
            _pools[workers] = pool
        return _pools[workers]


def _run_chunks(fn: Callable[[int, int, int], None], n: int, chunk: int) -> None:
    """fn(i, s, e) for every chunk i = [s, e) of range(n), on torch.get_num_threads() threads."""
    chunks = [(i, s, min(n, s + chunk)) for i, s in enumerate(range(0, n, chunk))]
    workers = min(torch.get_num_threads(), len(chunks))
    if workers <= 1:
        for c in chunks:
            fn(*c)
        return

    def work(part: list[tuple[int, int, int]]) -> None:
        with torch.no_grad():  # grad mode is per thread: the workers only compute
            for c in part:
                fn(*c)

    futures = [_pool(workers).submit(work, chunks[w::workers]) for w in range(workers)]
    for f in futures:
        f.result()


def _no_autocast() -> torch.autocast:
    """CPU autocast off: it is per thread, so under `torch.autocast("cpu")` the chunks that
    run on the calling thread would cast (baddbmm to bf16) and those on the workers would
    not; the kernel computes in its inputs' dtype everywhere instead."""
    return torch.autocast("cpu", enabled=False)


def _query_blocks(t: int, n_blocks: int) -> list[tuple[int, int]]:
    """Split query rows 0..t-1 into n_blocks ranges; block (a, b) needs keys 0..b-1 only."""
    edges = [round(i * t / n_blocks) for i in range(n_blocks + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


class _BlockedAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(d) + bias) with dropout, times v; bias must be causal (see below)."""

    @staticmethod
    def forward(
        ctx,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor,
        p: float,
        keep: torch.Tensor | None,
        chunk: int,
        n_blocks: int,
    ) -> torch.Tensor:
        n, t, hd = q.shape
        scale = 1.0 / math.sqrt(hd)
        blocks = _query_blocks(t, n_blocks)
        out = torch.empty_like(q)  # [N, T, hd]
        probs = [q.new_empty((n, b - a, b)) for a, b in blocks]  # softmax rows, kept for backward
        keeps = [torch.empty((n, b - a, b), dtype=torch.bool) for a, b in blocks] if p else []
        seed = int(torch.randint(0, 2**62, ())) if p and keep is None else 0

        def chunk_forward(i: int, s: int, e: int) -> None:  # heads s..e-1
            gen = torch.Generator().manual_seed(seed + i) if seed else None
            for j, (a, b) in enumerate(blocks):
                att = torch.baddbmm(
                    bias[a:b, :b], q[s:e, a:b], k[s:e, :b].transpose(1, 2), alpha=scale
                )  # [c, b-a, b]
                pr = torch.ops.aten._softmax.out(att, -1, False, out=probs[j][s:e])
                if p:
                    kp = keeps[j][s:e]
                    if keep is None:
                        keep_mask(tuple(kp.shape), p, out=kp, generator=gen)
                    else:
                        kp.copy_(keep[s:e, a:b, :b])
                    pr = pr * kp.view(torch.uint8).to(pr.dtype)
                torch.bmm(pr, v[s:e, :b], out=out[s:e, a:b])

        with _no_autocast():  # the chunks run in q's dtype on every thread
            _run_chunks(chunk_forward, n, chunk)
        if p:
            out.mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(q, k, v, *probs, *keeps)
        ctx.meta = (p, chunk, n_blocks, len(blocks))
        return out

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        p, chunk, n_blocks, nb = ctx.meta
        q, k, v, *rest = ctx.saved_tensors
        probs, keeps = rest[:nb], rest[nb:]
        n, t, hd = q.shape
        scale = 1.0 / math.sqrt(hd)
        blocks = _query_blocks(t, n_blocks)
        ds = dout.contiguous()
        if p:
            ds = ds * (1.0 / (1.0 - p))  # the output scale, moved onto the incoming gradient
        dq = torch.empty_like(q)
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)

        def chunk_backward(i: int, s: int, e: int) -> None:
            for j, (a, b) in enumerate(blocks):
                pr = probs[j][s:e]  # [c, b-a, b] softmax before dropout
                g = ds[s:e, a:b]  # [c, b-a, hd]
                dp = torch.bmm(g, v[s:e, :b].transpose(1, 2))  # grad of the dropped probs
                pd = pr
                if p:
                    kf = keeps[j][s:e].view(torch.uint8).to(pr.dtype)
                    pd = pr * kf
                    dp.mul_(kf)
                dv[s:e, :b].add_(torch.bmm(pd.transpose(1, 2), g))
                dsc = torch._softmax_backward_data(dp, pr, -1, pr.dtype)  # grad of the scores
                torch.bmm(dsc, k[s:e, :b], out=dq[s:e, a:b])
                dk[s:e, :b].add_(torch.bmm(dsc.transpose(1, 2), q[s:e, a:b]))

        with _no_autocast():
            _run_chunks(chunk_backward, n, chunk)
        dq.mul_(scale)
        dk.mul_(scale)
        return dq, dk, dv, None, None, None, None, None


def blocked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    p: float = 0.0,
    keep: torch.Tensor | None = None,
    chunk: int | None = None,
    n_blocks: int = 3,
) -> torch.Tensor:
    """Attention for training on CPU: q, k, v [N, T, hd] (N = batch * heads) -> [N, T, hd].

    bias [T, T] is added to the scaled scores (0 where attending, -inf where masked). It
    must be causal (query i sees no key after i): queries are split into `n_blocks` row
    blocks and block (a, b) only looks at keys 0..b-1, which skips ~1/3 of the work at 3
    blocks. Dropout p applies to the probabilities; `keep` [N, T, T] bool fixes the mask
    (tests), else it is drawn from per-chunk generators seeded from the torch RNG. `chunk`
    heads are processed at a time (default: CHUNK_SCORES / T^2, at least 8), chunks spread
    over torch.get_num_threads() threads. Computes in the inputs' dtype (bf16 under autocast).
    """
    if p and not 0.0 < p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    if chunk is None:
        chunk = max(8, CHUNK_SCORES // q.shape[1] ** 2)
    return _BlockedAttention.apply(
        q.contiguous(), k.contiguous(), v.contiguous(), bias, float(p), keep, chunk, n_blocks
    )


class Dropout(torch.nn.Module):
    """`nn.Dropout` drawing its mask with `keep_mask` on CPU (no parameters, same state dict)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def causal_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean attention mask [T, T] (True = attend) -> additive bias (0 / -inf)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, -math.inf)
