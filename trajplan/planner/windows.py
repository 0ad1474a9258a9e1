"""The model windows of the beam search: the logits of every planned token, two ways.

The model sees the context and the planned tokens cropped to a window of at most
`W = min(block_size, K*D - 1)` tokens that always starts at an observation's first token
(whole transitions are dropped from the front, position embeddings restart at 0). Both ways
give identical logits (`PlanConfig.mode`):

- "full" (`FullWindow`): the reference design. Every token runs the whole cropped window
  through the model.
- "cached" (`CachedWindow`, default): one incremental key/value-cached step per token. The
  window slides by one transition whenever a value token is fed and the sequence has outgrown
  W (at the first observation token of every planned step but the last, once the context is
  full); all positions then shift, so the window is recomputed: the context part (the same for
  every beam of an episode) once per episode, the planned part per beam on top of it.

An option that is not the reference (`PlanConfig.window = "grow"`): the window starts where
the reference's does when a plan begins, then grows with the planned tokens and slides only
once it would exceed the model's block (`block_size`, the trained window). At horizon 5 with
5 context transitions it never slides, so no recompute at all; the planned tokens then see
more context than the reference lets them.

A goal-conditioned model gets its episode's goal tokens [E, g] with the context (`begin`):
the goal position stays in front of every window however it slides (in cached mode it is
the first position of the shared prefix, computed once per recompute with the context).
"""

from __future__ import annotations

import torch

from trajplan.model.cache import KVCache
from trajplan.model.decoding import decode_params, feed_goal, forward_cached, forward_shared
from trajplan.model.gpt import TrajectoryGPT


def window_start(length: int, window: int, transition_dim: int) -> int:
    """First token of the model window for a sequence of `length` tokens (docs/method.md, Planner).

    Crops `length - window` tokens rounded up to whole transitions (0 when it fits).
    """
    over = max(length - window, 0)
    return -(-over // transition_dim) * transition_dim


class FullWindow:
    """Reference logits: the whole cropped window through the model for every token.

    Holds the context [E, P] and every row's planned tokens; rows are episode-major.
    With grow, the window keeps the plan's first start and only slides once it would
    exceed the model's block (the "grow" window option, not the reference semantics).
    """

    def __init__(
        self,
        model: TrajectoryGPT,
        window: int,
        max_planned: int,
        pool: dict[int, list[KVCache]] | None = None,
        grow: bool = False,
    ) -> None:
        self.model = model
        self.window = window
        self.max_planned = max_planned
        self.D = model.transition_dim
        self.pool = {} if pool is None else pool  # reusable caches by batch size (cached mode)
        self.grow = grow
        self.capacity = model.block_size if grow else window  # longest window of a row
        self.params = decode_params(model)  # collected once per plan (cached mode)

    def window_start(self, length: int) -> int:
        """First token of the model's window for a sequence of `length` tokens."""
        if self.grow:
            return max(self.start0, window_start(length, self.model.block_size, self.D))
        return window_start(length, self.window, self.D)

    def begin(self, ctx: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        """Start a plan from the context [E, P] (and goal tokens [E, g] of a goal-conditioned
        model); returns logits [E, V] of the first action."""
        self.ctx, self.goal = ctx, goal
        self.n_env, self.P = ctx.shape
        self.start0 = window_start(self.P, self.window, self.D)
        self.y = ctx.new_zeros(self.n_env, self.max_planned)  # planned tokens per row
        self.n = 0
        self.row_env = torch.arange(self.n_env, device=ctx.device)
        return self._logits()

    def select(self, idx: torch.Tensor, keep_state: bool = True) -> None:
        """New row i = old row idx[i] (tile, duplicate or drop rows)."""
        self.y = self.y.index_select(0, idx)
        self.row_env = self.row_env.index_select(0, idx)

    def push(self, tok: torch.Tensor) -> None:
        """Append tokens [R] without computing logits."""
        self.y[:, self.n] = tok
        self.n += 1

    def feed(self, tok: torch.Tensor) -> torch.Tensor:
        """Append tokens [R]; returns logits [R, V] for the next token."""
        self.push(tok)
        return self._logits()

    def planned(self) -> torch.Tensor:
        return self.y[:, : self.n]

    def _logits(self) -> torch.Tensor:
        length = self.P + self.n
        s = self.window_start(length)
        seq = torch.cat([self.ctx.index_select(0, self.row_env), self.y[:, : self.n]], dim=1)
        goal = None if self.goal is None else self.goal.index_select(0, self.row_env)
        logits, _ = self.model(seq[:, s:], goal=goal)  # [R, T, V]
        return logits[:, -1]


class CachedWindow(FullWindow):
    """Incremental logits: one cached step per token, a shared-prefix recompute per slide.

    The window of every row is the episode's context part (`prefix`: batch E, computed once
    per episode and never copied per row) followed by the row's own planned tokens (`own`:
    batch R, positions after the prefix). When the window slides, both are recomputed: the
    prefix at batch E, the planned part per row on top of it.
    """

    def begin(self, ctx: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        self.ctx, self.goal = ctx, goal
        self.n_env, self.P = ctx.shape
        self.y = ctx.new_zeros(self.n_env, self.max_planned)
        self.n = 0
        self.own = None
        self.own = self._buffer(self.n_env)
        self.start = self.start0 = window_start(self.P, self.window, self.D)
        return self._recompute()

    def _buffer(self, batch: int) -> KVCache:
        """An empty own-cache for `batch` rows whose storage is not the live one's."""
        bufs = self.pool.setdefault(batch, [])  # at most two per batch size: live and free
        for buf in bufs:
            if self.own is None or buf.k is not self.own.k:
                buf.length = 0
                return buf
        buf = empty_cache(self.model, batch, self.capacity, self.ctx.device)
        bufs.append(buf)
        return buf

    def select(self, idx: torch.Tensor, keep_state: bool = True) -> None:
        self.y = self.y.index_select(0, idx)
        if not keep_state:
            return
        dst = self._buffer(idx.numel())
        gather_rows(dst, self.own, idx, self.own.length)  # the filled part only
        self.own = dst

    def feed(self, tok: torch.Tensor) -> torch.Tensor:
        self.push(tok)
        s = self.window_start(self.P + self.n)
        if s == self.start:
            return forward_shared(
                self.model, tok[:, None], self.prefix, self.own, True, self.params
            )[:, 0]
        self.start = s
        return self._recompute()

    def _recompute(self) -> torch.Tensor:
        """Rebuild prefix and own caches for the window starting at self.start."""
        model, s = self.model, self.start
        n_shared = max(self.P - s, 0)
        cap = max(n_shared + model.goal_offset, 1)
        self.prefix = empty_cache(model, self.n_env, cap, self.ctx.device)
        if self.goal is not None:  # the goal first: every window position attends to it
            feed_goal(model, self.goal, self.prefix)
        first = max(s - self.P, 0)  # first planned token inside the window
        if first == self.n:  # plan start: the window is all context, one row per episode
            self.own = self._buffer(self.n_env)
            return forward_cached(model, self.ctx[:, s:], self.prefix, last_only=True)[:, 0]
        if n_shared:  # context part: once per episode
            forward_cached(model, self.ctx[:, s:], self.prefix, last_only=True)
        return self._recompute_planned(first)

    def _recompute_planned(self, first: int) -> torch.Tensor:
        """Recompute the planned part y[:, first:n] of every row's window, sharing work.

        Beams descend from common ancestors, so rows often agree on a prefix of their planned
        tokens. Level by level (one planned transition each), only distinct prefixes are
        computed, on top of their parent prefix's keys and values; the result is then spread
        to the rows. Identical inputs give identical keys, so this equals the per-row
        recompute.
        """
        model, y, E = self.model, self.y, self.n_env
        R, length = y.shape[0], self.n - first
        bounds = [b for b in range(self.D, self.n, self.D) if b > first] + [self.n]
        level: KVCache | None = None
        slot_prev: torch.Tensor | None = None
        prev = first
        for b in bounds:
            slot, rep = distinct_rows(y[:, first:b], E)  # row -> slot, slot -> a row
            cache = empty_cache(model, rep.numel(), length, y.device)
            if level is not None and slot_prev is not None:  # keys of the parent prefixes
                gather_rows(cache, level, slot_prev.index_select(0, rep), level.length)
            logits = forward_shared(model, y[rep, prev:b], self.prefix, cache, True, self.params)
            level, slot_prev, prev = cache, slot, b
        assert level is not None and slot_prev is not None
        self.own = self._buffer(R)
        gather_rows(self.own, level, slot_prev, length)
        return logits[:, 0].index_select(0, slot_prev)


def gather_rows(dst: KVCache, src: KVCache, idx: torch.Tensor, n: int) -> None:
    """dst row i = src row idx[i], positions 0..n-1 (dst.length becomes n)."""
    for d, s in ((dst.k, src.k), (dst.v, src.v)):
        if d.device.type == "cpu":  # straight into the strided destination, one copy
            torch.index_select(s[:, :, :, :n], 1, idx, out=d[:, :, :, :n])
        else:
            d[:, :, :, :n] = s[:, :, :, :n].index_select(1, idx)
    dst.length = n


def empty_cache(model: TrajectoryGPT, batch: int, capacity: int, device: torch.device) -> KVCache:
    """decoding.new_cache without zero-filling (only positions < length are ever read)."""
    cfg = model.cfg
    shape = (cfg.n_layer, batch, cfg.n_head, capacity, cfg.n_embd // cfg.n_head)
    dtype = model.pos_emb.dtype
    k = torch.empty(shape, device=device, dtype=dtype)
    return KVCache(k, torch.empty_like(k))


def distinct_rows(keys: torch.Tensor, n_env: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Group equal rows of keys [R, L] within each episode (rows episode-major).

    Returns slot [R] (row -> slot, episode e owns slots e*U .. e*U+U-1, U = most distinct rows
    of any episode) and rep [E*U] (slot -> one row holding it; unused slots repeat a row of
    their episode), so that keys[rep][slot] == keys.
    """
    R = keys.shape[0]
    r = R // n_env
    env = torch.arange(R, device=keys.device) // r
    uniq, inv = torch.unique(torch.cat([env[:, None], keys], 1), dim=0, return_inverse=True)
    counts = torch.bincount(uniq[:, 0], minlength=n_env)  # distinct rows per episode
    U = int(counts.max())
    first = torch.cumsum(counts, 0) - counts  # index of each episode's first distinct row
    slot = env * U + (inv - first[env])
    rep = (torch.arange(n_env, device=keys.device) * r).repeat_interleave(U)
    rep[slot] = torch.arange(R, device=keys.device)  # any row of a slot will do: all equal
    return slot, rep
