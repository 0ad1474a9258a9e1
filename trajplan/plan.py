"""Beam-search planning with the Trajectory Transformer (docs/method.md, Planner), exact and fast.

The planner keeps the last `max_context_transitions` real transitions of every episode,
`[obs, executed action, raw reward, value placeholder 1e6]`, tokenized. At each planning
step the model sees the context and the current observation, cropped to a window of at most
`W = min(block_size, K*D - 1)` tokens that always starts at an observation's first token
(whole transitions are dropped from the front, position embeddings restart at 0).

Beam search (per episode, `B = beam_width`, `n = n_expand`, horizon H):

    for t in 0..H-1:
        tile the beams n times (`x.repeat(n, 1)`)                      # n*B rows
        sample the a action tokens one at a time (cdf filter, top-k)
        sample reward and value greedily; read their expected values
        score = sum_{i<=t} gamma^i r_i + gamma^(t+1) V_t; keep the B best  # B rows
        unless t == H-1: sample the o observation tokens greedily
    act with the first action of the best beam, decoded through bin midpoints

Two ways to get the logits of every token, with identical semantics (`PlanConfig.mode`):

- "full": the reference design. Every token runs the whole cropped window through the model.
- "cached" (default): one incremental key/value-cached step per token. The window slides by
  one transition whenever a value token is fed and the sequence has outgrown W (at the first
  observation token of every planned step but the last, once the context is full); all
  positions then shift, so the window is recomputed: the context part (the same for every
  beam of an episode) once per episode, the planned part per beam on top of it.

Both modes draw their random numbers the same way: every episode has its own
`torch.Generator`, and at the start of each plan the episode draws all the uniforms the plan
needs (their number depends only on the config). Sampling is inverse-CDF on those uniforms,
so a fixed seed gives the same tokens in both modes and the same actions whether episodes
are planned one at a time or batched together. The draw is a plain categorical sample over
all N+1 classes (stop token included); "greedy" (k = 1) is top-1 filtering followed by such a
draw, so exact ties break at random.

An option that is not the reference (`PlanConfig.window = "grow"`): the window starts where
the reference's does when a plan begins, then grows with the planned tokens and slides only
once it would exceed the model's block (`block_size`, the trained window). At horizon 5 with
5 context transitions it never slides, so no recompute at all; the planned tokens then see
more context than the reference lets them.

All beams of all episodes form one batch, rows ordered episode-major (`row = e * rows + j`).
Episodes run in lockstep; a finished one is dropped from the batch (`Planner.drop`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trajplan.config import PlanConfig
from trajplan.errors import TrajplanError
from trajplan.model import KVCache, TrajectoryGPT
from trajplan.tokens import Discretizer

VALUE_PLACEHOLDER = 1e6  # value slot of context transitions (hidden by the attention mask)
MODES = ("cached", "full")
WINDOWS = ("slide", "grow")

# -- sampling ------------------------------------------------------------------------------


def cdf_filter(logits: torch.Tensor, probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """Give logit -1000 to every token with probability <= p* (docs/method.md, Planner, step 2).

    probs [R, V] is softmax(logits). Sort ascending and take the running sum; p* is the
    probability at the last position where that sum is still below `threshold`, or the
    smallest probability when there is no such position.
    """
    sorted_p = probs.sort(dim=-1).values  # [R, V] ascending
    below = sorted_p.cumsum(dim=-1) < threshold
    pos = torch.arange(probs.shape[-1], device=probs.device)
    last = (below * pos).argmax(dim=-1, keepdim=True)  # 0 when no position is below
    p_star = sorted_p.gather(-1, last)  # [R, 1]
    return logits.masked_fill(probs <= p_star, -1000.0)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of every row (and all ties of the k-th), the rest -inf."""
    kth = logits.topk(k, dim=-1).values[:, -1:]  # [R, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One categorical sample per row by inverse CDF: probs [R, V] (any scale), u [R] in [0, 1).

    Returns the first index whose cumulative probability exceeds `u * total`, so a class of
    probability 0 is never drawn.
    """
    cum = probs.to(torch.float64).cumsum(dim=-1)  # [R, V]
    target = (u.to(torch.float64) * cum[:, -1]).unsqueeze(1)  # [R, 1]
    idx = torch.searchsorted(cum, target, right=True).squeeze(1)
    return idx.clamp_max_(probs.shape[-1] - 1)


def sample_token(
    logits: torch.Tensor, u: torch.Tensor, k: int | None = None, cdf: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Filter (cdf, then top-k) and draw one token per row: logits [R, V], u [R].

    Returns (tokens [R] int64, raw probabilities [R, V] of the unfiltered softmax).
    """
    probs = torch.softmax(logits, dim=-1)
    if k == 1 and cdf is None:  # greedy: uniform over the maxima (top-1 filter, then draw)
        return draw((logits == logits.amax(dim=-1, keepdim=True)).to(probs.dtype), u), probs
    filtered = logits
    if cdf is not None:
        filtered = cdf_filter(filtered, probs, cdf)
    if k is not None:
        filtered = top_k_filter(filtered, k)
    if filtered is logits:
        return draw(probs, u), probs
    return draw(torch.softmax(filtered, dim=-1), u), probs


def token_logp(probs: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
    """[R] float64 log-probability of the drawn tokens under the raw softmax probs [R, V]."""
    return probs.gather(1, tok[:, None]).squeeze(1).to(torch.float64).clamp_min(1e-30).log()


def tail_mean(probs: torch.Tensor, mids: torch.Tensor, tail: float) -> torch.Tensor:
    """[R] float64 mean of the lowest `tail` share of each distribution probs [R, N] over the
    values mids [N] (tail 1: the expectation, computed as the reference does)."""
    p = probs.to(torch.float64)
    if tail >= 1.0:
        return p @ mids
    order = torch.argsort(mids)
    p, m = p[:, order], mids[order]
    cut = tail * p.sum(1, keepdim=True)  # [R, 1] mass to keep, from the lowest value up
    upper = p.cumsum(1)
    w = (torch.minimum(upper, cut) - (upper - p)).clamp_min(0.0)  # [R, N] kept mass per bin
    return (w @ m) / cut[:, 0]


def beam_scores(rewards: torch.Tensor, discount: float) -> torch.Tensor:
    """rewards [R, H+1] holding r_0..r_t, V_t, then zeros -> sum_i gamma^i * rewards[:, i]."""
    disc = discount ** torch.arange(rewards.shape[1], device=rewards.device, dtype=rewards.dtype)
    return rewards @ disc


class Uniforms:
    """The uniforms of one plan: drawn up front from every episode's generator.

    u: [E, n] float64 on the planning device; `take(k)` hands out the next k numbers of every
    episode, flattened episode-major ([E * k]).
    """

    def __init__(self, generators: Sequence[torch.Generator], n: int, device: torch.device):
        rows = [torch.rand(n, generator=g, dtype=torch.float64) for g in generators]
        self.u = torch.stack(rows).to(device)
        self.offset = 0

    def take(self, k: int) -> torch.Tensor:
        u = self.u[:, self.offset : self.offset + k]
        self.offset += k
        return u.reshape(-1)


def uniforms_per_plan(cfg: PlanConfig, obs_dim: int, act_dim: int) -> int:
    """Random numbers one episode's plan consumes (actions, reward and value, observations)."""
    nb = cfg.n_expand * cfg.beam_width
    return cfg.horizon * nb * (act_dim + 2) + (cfg.horizon - 1) * cfg.beam_width * obs_dim


# -- windows -------------------------------------------------------------------------------


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

    def window_start(self, length: int) -> int:
        """First token of the model's window for a sequence of `length` tokens."""
        if self.grow:
            return max(self.start0, window_start(length, self.model.block_size, self.D))
        return window_start(length, self.window, self.D)

    def begin(self, ctx: torch.Tensor) -> torch.Tensor:
        """Start a plan from the context [E, P]; returns logits [E, V] of the first action."""
        self.ctx = ctx
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
        logits, _ = self.model(seq[:, s:])  # [R, T, V]
        return logits[:, -1]


class CachedWindow(FullWindow):
    """Incremental logits: one cached step per token, a shared-prefix recompute per slide.

    The window of every row is the episode's context part (`prefix`: batch E, computed once
    per episode and never copied per row) followed by the row's own planned tokens (`own`:
    batch R, positions after the prefix). When the window slides, both are recomputed: the
    prefix at batch E, the planned part per row on top of it.
    """

    def begin(self, ctx: torch.Tensor) -> torch.Tensor:
        self.ctx = ctx
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
            return self.model.forward_shared(tok[:, None], self.prefix, self.own, True)[:, 0]
        self.start = s
        return self._recompute()

    def _recompute(self) -> torch.Tensor:
        """Rebuild prefix and own caches for the window starting at self.start."""
        model, s = self.model, self.start
        n_shared = max(self.P - s, 0)
        self.prefix = empty_cache(model, self.n_env, max(n_shared, 1), self.ctx.device)
        first = max(s - self.P, 0)  # first planned token inside the window
        if first == self.n:  # plan start: the window is all context, one row per episode
            self.own = self._buffer(self.n_env)
            return model.forward_cached(self.ctx[:, s:], self.prefix, last_only=True)[:, 0]
        if n_shared:  # context part: once per episode
            model.forward_cached(self.ctx[:, s:], self.prefix, last_only=True)
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
            logits = model.forward_shared(y[rep, prev:b], self.prefix, cache, last_only=True)
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
    """model.new_cache without zero-filling (only positions < length are ever read)."""
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


# -- beam search ---------------------------------------------------------------------------


@dataclass
class PlanResult:
    """Best plan of every episode: tokens [E, H, D] (first row starts with the current
    observation), its score [E] and the expected rewards r_0..r_{H-1} and final value V
    it was scored with, [E, H+1] (diagnostics: what the model predicted)."""

    tokens: torch.Tensor
    value: torch.Tensor
    rewards: torch.Tensor


def beam_search(
    model: TrajectoryGPT,
    ctx: torch.Tensor,
    cfg: PlanConfig,
    mids: torch.Tensor,
    uniforms: Uniforms,
    window: int,
    pool: dict[int, list[KVCache]] | None = None,
) -> PlanResult:
    """Plan for E episodes at once: ctx [E, P] tokens (context transitions + observation).

    mids [N, D] float64 bin midpoints on the device; pool: key/value buffers to reuse across
    plans (cached mode). Returns the best beam of every episode.
    """
    D, N = model.transition_dim, model.vocab_size
    a = model.cfg.act_dim
    o = model.cfg.obs_dim
    H, B, n = cfg.horizon, cfg.beam_width, cfg.n_expand
    E, dev = ctx.shape[0], ctx.device
    backend_cls = CachedWindow if cfg.mode == "cached" else FullWindow
    backend = backend_cls(model, window, H * D - o, pool, grow=cfg.window == "grow")
    mid_r, mid_v = mids[:, D - 2], mids[:, D - 1]  # [N] each

    logits = backend.begin(ctx)  # [E, V]
    rewards = torch.zeros(E, H + 1, dtype=torch.float64, device=dev)
    lam = cfg.logp_weight  # 0: the reference's score
    logp = torch.zeros(E, dtype=torch.float64, device=dev)  # log-likelihood of each plan
    env_base = torch.arange(E, device=dev)[:, None]
    rows = 1
    for t in range(H):
        # 1. tile: every episode's rows repeated n times (x.repeat(n, 1); at t = 0 the
        # single context row becomes B copies first)
        idx = (env_base * rows + torch.arange(n * B, device=dev) % rows).reshape(-1)
        backend.select(idx)
        logits, rewards, logp = logits[idx], rewards[idx], logp[idx]
        # 2. actions, one token at a time
        for _ in range(a):
            tok, probs = sample_token(logits, uniforms.take(n * B), cfg.k_act, cfg.cdf_act)
            if lam:
                logp += token_logp(probs, tok)
            logits = backend.feed(tok)
        # 3. reward and value, greedy, scored by their expectations under the raw softmax
        tok_r, p_r = sample_token(logits, uniforms.take(n * B), cfg.k_rew, None)
        logits = backend.feed(tok_r)
        tok_v, p_v = sample_token(logits, uniforms.take(n * B), cfg.k_rew, None)
        rewards[:, t] = tail_mean(p_r[:, :N], mid_r, cfg.score_tail)
        rewards[:, t + 1] = tail_mean(p_v[:, :N], mid_v, cfg.score_tail)
        # 4-5. score and keep the B best of every episode
        values = beam_scores(rewards, cfg.discount).view(E, n * B)
        rank = values + lam * logp.view(E, n * B) if lam else values
        best = rank.topk(B, dim=1).indices  # [E, B], best first
        values = values.gather(1, best)
        idx = (env_base * (n * B) + best).reshape(-1)
        last = t == H - 1
        backend.select(idx, keep_state=not last)
        rewards, tok_v, logp = rewards[idx], tok_v[idx], logp[idx]
        rows = B
        # 6. next observation, greedy
        if last:
            backend.push(tok_v)
            break
        logits = backend.feed(tok_v)
        for _ in range(o):
            tok, probs = sample_token(logits, uniforms.take(B), cfg.k_obs, cfg.cdf_obs)
            if lam:
                logp += token_logp(probs, tok)
            logits = backend.feed(tok)
    best_rows = torch.arange(E, device=dev) * B  # topk is sorted: row 0 is the argmax
    planned = backend.planned().index_select(0, best_rows)  # [E, H*D - o]
    tokens = torch.cat([ctx[:, -o:], planned], dim=1).view(E, H, D)
    return PlanResult(tokens, values[:, 0], rewards.index_select(0, best_rows))


# -- the planner ---------------------------------------------------------------------------


def plan_window(model: TrajectoryGPT, cfg: PlanConfig) -> int:
    """Most tokens the model sees: max_context_transitions * D - 1, capped by its block."""
    return min(model.block_size, cfg.max_context_transitions * model.transition_dim - 1)


def check_plan_config(cfg: PlanConfig, model: TrajectoryGPT | None = None) -> None:
    """Raise a one-line TrajplanError for options the beam search cannot run with.

    The horizon itself has no upper limit: the window slides, so the model never sees more
    than `plan_window` tokens however far the plan looks ahead.
    """
    for name in ("horizon", "beam_width", "n_expand", "max_context_transitions", "plan_freq"):
        if getattr(cfg, name) < 1:
            raise TrajplanError(f"plan.{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.plan_freq > cfg.horizon:
        raise TrajplanError(
            f"plan.plan_freq ({cfg.plan_freq}) cannot exceed the horizon ({cfg.horizon}): "
            "the plan has no actions beyond it"
        )
    if cfg.mode not in MODES:
        raise TrajplanError(f"unknown plan mode {cfg.mode!r}: use one of {', '.join(MODES)}")
    if cfg.window not in WINDOWS:
        raise TrajplanError(f"unknown plan window {cfg.window!r}: use one of {', '.join(WINDOWS)}")
    if not 0.0 < cfg.discount <= 1.0:
        raise TrajplanError(f"plan.discount must be in (0, 1], got {cfg.discount}")
    if not (math.isfinite(cfg.logp_weight) and cfg.logp_weight >= 0):
        raise TrajplanError(f"plan.logp_weight must be >= 0, got {cfg.logp_weight}")
    if not 0.0 < cfg.score_tail <= 1.0:
        raise TrajplanError(f"plan.score_tail must be in (0, 1], got {cfg.score_tail}")
    for name in ("cdf_obs", "cdf_act"):
        p = getattr(cfg, name)
        if p is not None and not 0.0 < p <= 1.0:
            raise TrajplanError(f"plan.{name} must be in (0, 1] or none, got {p}")
    if model is None:
        return
    n_classes = model.vocab_size + 1
    for name in ("k_obs", "k_act", "k_rew"):
        k = getattr(cfg, name)
        if k is not None and not 1 <= k <= n_classes:
            raise TrajplanError(
                f"plan.{name} must be between 1 and {n_classes} (bins + stop) or none, got {k}"
            )
    D = model.transition_dim
    if cfg.horizon > 1 and plan_window(model, cfg) < D:
        raise TrajplanError(
            f"the planning window ({plan_window(model, cfg)} tokens) holds less than one "
            f"transition ({D} tokens): use max_context_transitions >= 2"
        )


class Planner:
    """TT beam-search planner for E episodes in lockstep.

    Usage: `reset(n_envs, seeds)`, then per env step `act(obs) -> actions`,
    `observe(obs, actions, rewards)`, and `drop(keep)` when episodes end.
    Observations are what the model sees (Ant: `envs.obs_view`).
    """

    def __init__(
        self,
        model: TrajectoryGPT,
        discretizer: Discretizer,
        cfg: PlanConfig | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        cfg = cfg or PlanConfig()
        check_plan_config(cfg, model)
        if discretizer.dim != model.transition_dim or discretizer.n_bins != model.vocab_size:
            raise TrajplanError(
                f"discretizer ({discretizer.dim} dims, {discretizer.n_bins} bins) does not "
                f"match the model ({model.transition_dim} dims, {model.vocab_size} bins)"
            )
        self.device = torch.device(device) if device is not None else model.pos_emb.device
        self.model = model.to(self.device).eval()
        self.disc = discretizer
        self.cfg = cfg
        self.obs_dim, self.act_dim = model.cfg.obs_dim, model.cfg.act_dim
        self.D = model.transition_dim
        self.window = plan_window(model, cfg)
        self.mids = torch.as_tensor(discretizer.midpoints(), device=self.device)  # [N, D] f64
        self.n_uniforms = uniforms_per_plan(cfg, self.obs_dim, self.act_dim)
        self._pool: dict[int, list[KVCache]] = {}  # key/value buffers reused by every plan
        self.plan_seconds = 0.0
        self.n_plans = 0
        self.reset(1)

    def reset(self, n_envs: int, seeds: Sequence[int] | None = None) -> None:
        """Start n_envs episodes; episode e samples from a generator seeded with seeds[e]."""
        if n_envs < 1:
            raise TrajplanError(f"need at least one episode, got {n_envs}")
        seeds = list(range(n_envs)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != n_envs:
            raise TrajplanError(f"got {len(seeds)} seeds for {n_envs} episodes")
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.context = torch.zeros(n_envs, 0, self.D, dtype=torch.long, device=self.device)
        self.steps = 0
        self.plan: PlanResult | None = None

    @property
    def n_envs(self) -> int:
        return len(self.generators)

    def _check_obs(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        if obs.shape != (self.n_envs, self.obs_dim):
            raise TrajplanError(
                f"expected observations of shape ({self.n_envs}, {self.obs_dim}), got {obs.shape}"
            )
        return obs

    @torch.inference_mode()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Observations [E, o] -> actions [E, a] (float64 bin midpoints)."""
        obs = self._check_obs(obs)
        row = self.steps % self.cfg.plan_freq
        if row == 0:
            obs_tok = torch.as_tensor(
                self.disc.discretize(obs, dims=slice(0, self.obs_dim)), device=self.device
            )  # [E, o]
            ctx = torch.cat([self.context.flatten(1), obs_tok], dim=1)  # [E, P]
            t0 = time.perf_counter()
            uniforms = Uniforms(self.generators, self.n_uniforms, self.device)
            self.plan = beam_search(
                self.model, ctx, self.cfg, self.mids, uniforms, self.window, self._pool
            )
            assert uniforms.offset == self.n_uniforms, "plan consumed an unexpected draw count"
            self.plan_seconds += time.perf_counter() - t0
            self.n_plans += 1
        assert self.plan is not None
        o, a = self.obs_dim, self.act_dim
        act_tok = self.plan.tokens[:, row, o : o + a].cpu().numpy()
        return self.disc.reconstruct(act_tok, dims=slice(o, o + a))

    def observe(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Add the executed transitions (obs before the step, action, raw reward) to the context."""
        obs = self._check_obs(obs)
        actions = np.asarray(actions, dtype=np.float64).reshape(self.n_envs, self.act_dim)
        rewards = np.asarray(rewards, dtype=np.float64).reshape(self.n_envs, 1)
        placeholder = np.full_like(rewards, VALUE_PLACEHOLDER)
        trans = np.concatenate([obs, actions, rewards, placeholder], axis=1)  # [E, D]
        tok = torch.as_tensor(self.disc.discretize(trans), device=self.device)
        keep = self.cfg.max_context_transitions
        self.context = torch.cat([self.context, tok[:, None]], dim=1)[:, -keep:]
        self.steps += 1

    def drop(self, keep: np.ndarray | Sequence[bool]) -> None:
        """Keep only the episodes where keep[e] is true (the others have ended)."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.n_envs,):
            raise TrajplanError(f"keep mask of shape {keep.shape} for {self.n_envs} episodes")
        idx = torch.as_tensor(np.flatnonzero(keep), device=self.device)
        self.generators = [g for g, k in zip(self.generators, keep, strict=True) if k]
        self.context = self.context.index_select(0, idx)
        if self.plan is not None:
            p = self.plan
            self.plan = PlanResult(
                *(x.index_select(0, idx) for x in (p.tokens, p.value, p.rewards))
            )

    def predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """What the model predicted for the actions `act` just returned: the expected reward
        of this step [E] and the score of the plan they come from [E] (its predicted
        discounted return from the step where it was made)."""
        assert self.plan is not None, "call act() first"
        row = (self.steps % self.cfg.plan_freq) if self.cfg.plan_freq > 1 else 0
        return (
            self.plan.rewards[:, row].cpu().numpy(),
            self.plan.value.cpu().numpy().astype(np.float64),
        )

    @property
    def ms_per_plan(self) -> float:
        return 1000.0 * self.plan_seconds / max(self.n_plans, 1)
