"""Beam search over the model's tokens for E episodes at once (docs/method.md, Planner).

Per episode, `B = beam_width`, `n = n_expand`, horizon H:

    for t in 0..H-1:
        tile the beams n times (`x.repeat(n, 1)`)                      # n*B rows
        sample the a action tokens one at a time (cdf filter, top-k)
            (a candidate source may replace some rows' actions: a prior policy's)
        sample reward and value greedily; read their expected values
        score every row (TT: sum_{i<=t} gamma^i r_i + gamma^(t+1) V_t; TT + Q: a critic's
            value of the row's last planned state and action; imitation: the summed
            log-probabilities of the row's planned action and observation tokens, a
            repeated plan ranked last); keep the B best
        unless t == H-1: sample the o observation tokens greedily
    act with the first action of the best beam, decoded through bin midpoints

The candidate source (`trajplan.planner.candidates`) and the scorer
(`trajplan.planner.scorers`) are the pluggable parts; without a source and with
`ValueScorer` this is the published search. All beams of all episodes form one batch, rows
ordered episode-major (`row = e * rows + j`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from trajplan.config import PlanConfig
from trajplan.model.cache import KVCache
from trajplan.model.gpt import TrajectoryGPT
from trajplan.planner.candidates import CandidateSource
from trajplan.planner.sampling import Uniforms, expectation, sample_token
from trajplan.planner.scorers import Scorer, TokenLogp, ValueScorer, repeated_rows
from trajplan.planner.states import BeamObservations, decode_actions
from trajplan.planner.windows import CachedWindow, FullWindow


@dataclass
class PlanResult:
    """Best plan of every episode: tokens [E, H, D] (first row starts with the current
    observation), its score [E], the expected rewards r_0..r_{H-1} and final value V it was
    scored with, [E, H+1] (diagnostics: what the model predicted), and whether its first
    action came from the candidate source rather than the model [E]."""

    tokens: torch.Tensor
    value: torch.Tensor
    rewards: torch.Tensor
    from_source: torch.Tensor  # [E] bool

    def select(self, idx: torch.Tensor) -> PlanResult:
        """The plans of episodes idx."""
        return PlanResult(*(x.index_select(0, idx) for x in vars(self).values()))


def beam_search(
    model: TrajectoryGPT,
    ctx: torch.Tensor,
    cfg: PlanConfig,
    mids: torch.Tensor,
    uniforms: Uniforms,
    window: int,
    pool: dict[int, list[KVCache]] | None = None,
    source: CandidateSource | None = None,
    obs: torch.Tensor | None = None,
    scorer: Scorer | None = None,
    goal: torch.Tensor | None = None,
) -> PlanResult:
    """Plan for E episodes at once from ctx [E, P] tokens (context transitions + observation);
    mids [N, D] float64 bin midpoints; pool: key/value buffers reused across plans (cached
    mode); source, with obs [E, o] the real observations: candidate actions besides the
    model's; scorer: how rows rank (default `ValueScorer`); goal [E, g]: the goal tokens of
    a goal-conditioned model (placed before every window). Returns each episode's best beam.
    """
    D, N = model.transition_dim, model.vocab_size
    a, o = model.cfg.act_dim, model.cfg.obs_dim
    H, B, n = cfg.horizon, cfg.beam_width, cfg.n_expand
    E, dev = ctx.shape[0], ctx.device
    scorer = scorer or ValueScorer(cfg.discount)
    backend_cls = CachedWindow if cfg.mode == "cached" else FullWindow
    backend = backend_cls(model, window, H * D - o, pool, grow=cfg.window == "grow")
    mid_r, mid_v = mids[:, D - 2], mids[:, D - 1]  # [N] each

    logits = backend.begin(ctx, goal)  # [E, V]
    rewards = torch.zeros(E, H + 1, dtype=torch.float64, device=dev)
    from_source = torch.zeros(E, dtype=torch.bool, device=dev)  # per row: action 0 replaced
    env_base = torch.arange(E, device=dev)[:, None]
    states, logp, rowwise = _rowwise(source, scorer, obs, mids, n * B, E)
    rows = 1
    for t in range(H):
        # 1. tile: every episode's rows repeated n times (x.repeat(n, 1); at t = 0 the
        # single context row becomes B copies first)
        idx = (env_base * rows + torch.arange(n * B, device=dev) % rows).reshape(-1)
        backend.select(idx)
        logits, rewards, from_source = logits[idx], rewards[idx], from_source[idx]
        _follow(rowwise, idx)
        proposed = source.propose(t, uniforms) if source is not None else None  # [R], [R, a]
        # 2. actions, one token at a time
        logits, act_tok = _actions(backend, logits, cfg, uniforms.take, n * B, a, proposed, logp)
        if t == 0 and proposed is not None:
            from_source = proposed[0]
        # 3. reward and value, greedy, scored by their expectations under the raw softmax
        tok_r, p_r = sample_token(logits, uniforms.take(n * B), cfg.k_rew, None)
        logits = backend.feed(tok_r)
        tok_v, p_v = sample_token(logits, uniforms.take(n * B), cfg.k_rew, None)
        rewards[:, t] = expectation(p_r[:, :N], mid_r)
        rewards[:, t + 1] = expectation(p_v[:, :N], mid_v)
        # 4-5. score and keep the B best of every episode
        act = decode_actions(act_tok, mids, o) if states is not None else None  # [R, a]
        values = scorer.score(rewards, t, states and states.obs, act, logp and logp.sum)
        if scorer.distinct:  # one row per distinct plan
            values = values.masked_fill(repeated_rows(backend.planned(), E), -torch.inf)
        values, best = values.view(E, n * B).topk(B, dim=1)  # [E, B], best first
        last = t == H - 1
        idx = (env_base * (n * B) + best).reshape(-1)
        backend.select(idx, keep_state=not last)
        rewards, tok_v, from_source = rewards[idx], tok_v[idx], from_source[idx]
        _follow(rowwise, idx)
        rows = B
        # 6. next observation, greedy
        if last:
            backend.push(tok_v)
            break
        logits = _observations(backend, backend.feed(tok_v), cfg, uniforms.take, B, o, rowwise)
    best_rows = torch.arange(E, device=dev) * B  # topk is sorted: row 0 is the argmax
    planned = backend.planned().index_select(0, best_rows)  # [E, H*D - o]
    tokens = torch.cat([ctx[:, -o:], planned], dim=1).view(E, H, D)
    return PlanResult(tokens, values[:, 0], rewards[best_rows], from_source[best_rows])


def _actions(
    backend: FullWindow,
    logits: torch.Tensor,
    cfg: PlanConfig,
    take: Callable[[int], torch.Tensor],
    rows: int,
    a: int,
    proposed: tuple[torch.Tensor, torch.Tensor] | None,
    logp: TokenLogp | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample the a action tokens of every row, one at a time (the source's where it
    proposes: mask [R], tokens [R, a]), and feed them (and add their log-probabilities to
    logp); `rows` per episode take uniforms from `take`. Returns the logits [R, V] after the
    last and the tokens [R, a]."""
    toks = []
    for i in range(a):
        tok, _ = sample_token(logits, take(rows), cfg.k_act, cfg.cdf_act)
        if proposed is not None:
            tok = torch.where(proposed[0], proposed[1][:, i], tok)
        if logp is not None:
            logp.add(logits, tok)
        logits = backend.feed(tok)
        toks.append(tok)
    return logits, torch.stack(toks, dim=1)


def _observations(
    backend: FullWindow,
    logits: torch.Tensor,
    cfg: PlanConfig,
    take: Callable[[int], torch.Tensor],
    rows: int,
    o: int,
    rowwise: list,
) -> torch.Tensor:
    """Sample the o observation tokens of every row one at a time, show them to the rowwise
    followers (and add their log-probabilities to a `TokenLogp` among them) and feed them.
    Returns the logits [R, V] after the last."""
    for j in range(o):
        tok, _ = sample_token(logits, take(rows), cfg.k_obs, cfg.cdf_obs)
        for x in rowwise:
            if isinstance(x, TokenLogp):
                x.add(logits, tok)
            x.observe(j, tok)
        logits = backend.feed(tok)
    return logits


def _rowwise(
    source: CandidateSource | None,
    scorer: Scorer,
    obs: torch.Tensor | None,
    mids: torch.Tensor,
    rows: int,
    n_env: int,
) -> tuple[BeamObservations | None, TokenLogp | None, list]:
    """Start what follows the rows through a plan: the candidate source, the decoded
    states and the summed token log-probabilities when the scorer reads them (`n_env` rows
    at first). Returns (states or None, logp or None, all of them)."""
    states = BeamObservations(mids) if scorer.needs_states else None
    rowwise: list = [x for x in (source, states) if x is not None]
    if rowwise:
        assert obs is not None, "a candidate source or a critic needs the real observations"
    if source is not None:
        source.begin(obs, rows)
    if states is not None:
        states.begin(obs)
    logp = None
    if scorer.needs_logp:
        logp = TokenLogp(n_env, mids.device)
        rowwise.append(logp)
    return states, logp, rowwise


def _follow(rowwise: list, idx: torch.Tensor) -> None:
    """The rows were tiled or selected: row i is now old row idx[i]."""
    for x in rowwise:
        x.follow(idx)
