"""Inference paths of the TT model for the planner: key/value caches, no training.

`TrajectoryGPT.forward` runs a whole window; planning feeds one token at a time on top of
keys and values already computed (docs/method.md, Planner):

    forward_cached  feed tokens after a cache's prefix, extending it in place
    forward_shared  the same after a prefix that the rows (beams) of an episode share,
                    read once per episode and never copied per row
    decode_step     forward_shared for one token, in about half the tensor ops

Each equals the full forward over the same window (tests/test_model.py, tests/test_plan.py).

Why `decode_step` is a second copy of the block's arithmetic, not `Block.forward` with a
cache: a decoding step at planning batch sizes costs mostly per-op overhead, and the fused
copy has half the ops. `python scripts/bench_decode.py` (2026-12-08, idle 2-core CPU, one
thread; microseconds per token, decode_step against the blocks): maze recipe 1,135 against
1,393 (1.23x), CPU recipe 2,986 against 3,817 (1.28x), the reference's size 13,188 against
13,227 (level). It pays on the CPU recipes and costs nothing at the reference's size; the
equivalence tests hold it to the block.

A goal-conditioned model (`TrajectoryGPT.goal_offset` = 1) holds its goal at cache position 0
(`feed_goal`, the first thing fed into a cache); cache positions are then model positions,
window position p at p + 1 (tests/test_goals.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trajplan.model.cache import KVCache
from trajplan.model.gpt import TrajectoryGPT

DecodeParams = list[tuple[tuple, ...]]  # per block, see decode_params


def new_cache(
    model: TrajectoryGPT,
    batch_size: int,
    capacity: int | None = None,
    device: torch.device | None = None,
) -> KVCache:
    """An empty cache for `batch_size` sequences of up to `capacity` tokens."""
    cfg = model.cfg
    capacity = capacity or model.block_size + model.goal_offset
    p = model.pos_emb
    shape = (cfg.n_layer, batch_size, cfg.n_head, capacity, cfg.n_embd // cfg.n_head)
    dev = device or p.device
    return KVCache(
        torch.zeros(shape, device=dev, dtype=p.dtype),
        torch.zeros(shape, device=dev, dtype=p.dtype),
    )


def feed_goal(model: TrajectoryGPT, goal: torch.Tensor, cache: KVCache) -> None:
    """Write the goal position (goal tokens [B, g]) into an empty cache: position 0."""
    if cache.length != 0:
        raise ValueError("the goal goes first: feed it into an empty cache")
    model.check_goal(goal, cache.batch_size)
    x = model._embed_goal(goal)  # [B, 1, C]
    for i, block in enumerate(model.blocks):
        x = block(x, model.mask[:1, :1], cache, i)
    cache.length = 1


def forward_cached(
    model: TrajectoryGPT, idx: torch.Tensor, cache: KVCache, last_only: bool = False
) -> torch.Tensor:
    """Feed tokens [B, n] after the cache's prefix; returns logits [B, n, N+1].

    The tokens take window positions cache.length .. cache.length+n-1 (their dimension
    is position % D); the cache is extended in place. With last_only, only the last
    position's logits are computed ([B, 1, N+1]).
    """
    start, n, off = cache.length, idx.shape[1], model.goal_offset
    if start + n > min(model.block_size + off, cache.capacity):
        raise ValueError(f"window of {start + n} tokens exceeds block/cache size")
    if idx.shape[0] != cache.batch_size:
        raise ValueError(f"batch {idx.shape[0]} != cache batch {cache.batch_size}")
    if start < off:
        raise ValueError("a goal-conditioned model's cache starts with its goal (feed_goal)")
    x = model._embed(idx, start - off)
    mask = model.mask[start : start + n, : start + n]
    for i, block in enumerate(model.blocks):
        x = block(x, mask, cache, i)
    cache.length = start + n
    if last_only:
        x, start = x[:, -1:], start + n - 1
    return model._head(model.ln_f(x), start - off)


def forward_shared(
    model: TrajectoryGPT,
    idx: torch.Tensor,
    prefix: KVCache,
    cache: KVCache,
    last_only: bool = False,
    params: DecodeParams | None = None,
) -> torch.Tensor:
    """Like forward_cached, after a prefix that the rows of each episode share.

    prefix: batch E, holding window positions 0..Lp-1 of each episode; cache: batch R =
    E * r (rows episode-major), holding each row's own positions Lp..Lp+cache.length-1.
    Tokens idx [R, n] take the next positions and are written to `cache`. The result
    equals forward_cached on a cache holding the prefix copied into every row, without
    the copy (the planner's beams share their context this way). params: `decode_params`
    of the model, collected once by a caller that decodes many tokens (else here).
    """
    if idx.shape[1] == 1 and not model.training:
        return decode_step(model, idx[:, 0], prefix, cache, params)[:, None]
    if prefix.length == 0:
        return forward_cached(model, idx, cache, last_only)
    R, n = idx.shape
    if R % prefix.batch_size:
        raise ValueError(f"{R} rows cannot be split over {prefix.batch_size} prefixes")
    own, off = cache.length, model.goal_offset
    start = prefix.length + own
    if start + n > model.block_size + off or own + n > cache.capacity:
        raise ValueError(f"window of {start + n} tokens exceeds block/cache size")
    if R != cache.batch_size:
        raise ValueError(f"batch {R} != cache batch {cache.batch_size}")
    x = model._embed(idx, start - off)
    mask = model.mask[start : start + n, : start + n]
    for i, block in enumerate(model.blocks):
        x = block(x, mask, cache, i, prefix)
    cache.length = own + n
    if last_only:
        x, start = x[:, -1:], start + n - 1
    return model._head(model.ln_f(x), start - off)


def decode_step(
    model: TrajectoryGPT,
    tok: torch.Tensor,
    prefix: KVCache,
    cache: KVCache,
    params: DecodeParams | None = None,
) -> torch.Tensor:
    """One token per row (tok [R]) after prefix + own cache -> logits [R, N+1] (eval only).

    The same arithmetic as forward_shared with n = 1, in about half the tensor ops: a
    decoding step's cost is mostly per-op overhead at planning batch sizes.
    """
    R, E = tok.shape[0], prefix.batch_size
    cfg = model.cfg
    H, C = cfg.n_head, cfg.n_embd
    hd, r, Lp, own = C // H, R // E, prefix.length, cache.length
    pos = Lp + own  # model position (window position + goal_offset)
    wpos = pos - model.goal_offset
    if not 0 <= wpos < model.block_size or own >= cache.capacity or R != cache.batch_size or R % E:
        raise ValueError(f"cannot decode position {pos} for {R} rows in this cache")
    d = wpos % model.transition_dim
    emb_idx = torch.where(tok == model.vocab_size, model.stop_token, tok + d * model.vocab_size)
    x = model.tok_emb(emb_idx) + model.pos_emb[wpos]  # [R, C]
    keep = model.mask[pos, : pos + 1]  # [Lp + own + 1] keys this position may attend to
    hide = ~keep
    for i, (ln1, qkv, proj, ln2, fc, fc_proj) in enumerate(params or decode_params(model)):
        h = torch.layer_norm(x, (C,), *ln1)
        q, k, v = F.linear(h, *qkv).view(R, 3, H, hd).unbind(1)
        cache.k[i, :, :, own] = k
        cache.v[i, :, :, own] = v
        k_own = cache.k[i, :, :, : own + 1]  # [R, H, S, hd]
        v_own = cache.v[i, :, :, : own + 1]
        q = (q * hd**-0.5).unsqueeze(2)  # [R, H, 1, hd]
        att_own = torch.matmul(q, k_own.transpose(-1, -2))  # [R, H, 1, S]
        if Lp:
            qe = q.view(E, r, H, hd).transpose(1, 2)  # [E, H, r, hd]
            att_p = torch.matmul(qe, prefix.k[i, :, :, :Lp].transpose(-1, -2))  # [E,H,r,Lp]
            att_o = att_own.view(E, r, H, -1).transpose(1, 2)  # [E, H, r, S]
            att = torch.cat([att_p, att_o], dim=-1).masked_fill_(hide, float("-inf"))
            att = att.softmax(dim=-1)  # [E, H, r, Lp + S]
            y = torch.matmul(att[..., :Lp], prefix.v[i, :, :, :Lp])  # [E, H, r, hd]
            w_own = att[..., Lp:].transpose(1, 2).reshape(R, H, 1, -1)
            y = y.transpose(1, 2).reshape(R, C) + torch.matmul(w_own, v_own).view(R, C)
        else:
            att = att_own.masked_fill_(hide, float("-inf")).softmax(dim=-1)
            y = torch.matmul(att, v_own).view(R, C)
        x = x + F.linear(y, *proj)
        h = F.gelu(F.linear(torch.layer_norm(x, (C,), *ln2), *fc))
        x = x + F.linear(h, *fc_proj)
    cache.length = own + 1
    x = torch.layer_norm(x, (C,), model.ln_f.weight, model.ln_f.bias, model.ln_f.eps)
    return F.linear(x, model.head[d])  # [R, N+1]


def decode_params(model: TrajectoryGPT) -> DecodeParams:
    """Per block: (ln1 weight, bias, eps), qkv, proj, (ln2 ...), fc, mlp proj (w, b).

    Module attribute lookups are a visible share of a decoding step, so a caller that
    decodes many tokens (the planner's window, once per plan) collects these once and
    passes them on; they hold the model's own parameters, so they stay valid until the
    model's parameters are replaced.
    """
    return [
        (
            (b.ln1.weight, b.ln1.bias, b.ln1.eps),
            (b.attn.qkv.weight, b.attn.qkv.bias),
            (b.attn.proj.weight, b.attn.proj.bias),
            (b.ln2.weight, b.ln2.bias, b.ln2.eps),
            (b.mlp.fc.weight, b.mlp.fc.bias),
            (b.mlp.proj.weight, b.mlp.proj.bias),
        )
        for b in model.blocks
    ]
