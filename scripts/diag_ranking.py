"""Can the model rank the search's candidate actions? A counterfactual check in the simulator.

    python scripts/diag_ranking.py --run runs/tt --prior runs/wbc
    python scripts/diag_ranking.py --run runs/tt --prior runs/wbc --episodes 5 --every 10
    python scripts/diag_ranking.py --run runs/tt --prior runs/wbc --critic runs/iql   # TT + Q

The planner with a prior (`plan.prior`) chooses among the prior's action plus noise. Whether
that choice can beat a random pick depends on one thing: does the model's score order the
candidates as their true returns do? This script measures it. Along the prior's own episodes
(seeds SEED.., noise-free), at every `--every`-th step, `--candidates` first actions
(the prior's action plus the plan's `prior_noise`, the first one noise-free, tokenized as the
planner does; with `--source model`, drawn from the model as the reference search draws its
candidates: token by token, the run's action filters, the current context) are each scored
twice:

- by the model, as the planner would score the plan "take the candidate, then follow the
  prior on the predicted observations": sum_i gamma^i E[r_i] + gamma^H E[V] over the run's
  plan horizon H, with the planner's own window and greedy reward, value and observation
  tokens (trajplan.planner); with `--lookahead search`, by the value of the best plan the
  run's own search (the reference's, no prior) finds from the candidate instead. With
  `--critic IQL_RUN` (an IQL run, `trajplan iql`) the score is TT + Q's instead: the
  planner's with the run's critic as its scorer (`plan.critic`, trajplan.planner.scorers):
  the model's expected rewards up to the plan's last state, then the critic's Q of that
  state and action, the first state the real one; so
  at horizon 1, Q(s, candidate) itself;
- by the simulator: the env is set to the state, takes the candidate, then follows the
  prior for `--steps` steps (or until it terminates): sum_t gamma^t r_t. (With the search's
  lookahead the model continues with its own actions, the simulator with the prior's: the
  planner as the simulator's policy for every candidate would cost hours.)

Per state it records the Spearman rank correlation of the two, the same for the first
step's reward alone (the model's expected reward against the simulator's), and the true
return of the model's pick, of the best candidate and of the noise-free one, each against
the mean over the candidates, and how often the pick's action dimensions sit in an
outermost bin (at an action bound) against all candidates' (a critic that over-values
actions off the data tends to pick saturated ones). A correlation near 0 says the search
cannot beat a random pick among its candidates: then the model's predictions, not the
search, need work; a good first-reward correlation with a poor total one points at the
value head (and TT + Q's correlation against TT's says whether a learned critic ranks
where the model does not).
A state whose scores (or true returns) all tie has no correlation: the figures count only
the others (`ranked_states`), and a correlation is null when no state has one.
Prints a table, then as its last line one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from trajplan.envs.mazes import flatten_goal_obs
from trajplan.envs.registry import make_env


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of x, ties sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    for v in np.unique(x):
        tie = x == v
        r[tie] = r[tie].mean()
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation (None when either side is constant)."""
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


@torch.inference_mode()
def plan_from(
    ckpt, cfg, context: torch.Tensor, cand: torch.Tensor, prior=None, obs=None, scorer=None
):
    """The planner's best plan from each candidate first action cand [K, a], all from
    context [1, P] with the real observation obs [o]: with `prior` (an actor), every later
    action is the prior's, noise-free, on the predicted observations (one beam: the rows
    would all be equal); without, the run's own search continues (no prior). `scorer`: how
    rows rank and plans score (default the model's value; a `CriticScorer`: TT + Q).
    Returns `PlanResult` for K plans."""
    import dataclasses

    from trajplan.planner import Uniforms, beam_search, plan_window, uniforms_per_plan
    from trajplan.planner.candidates import Chain, FirstAction
    from trajplan.planner.prior import PriorCandidates, PriorProposals

    model, disc = ckpt.model, ckpt.discretizer
    o, a, k = model.cfg.obs_dim, model.cfg.act_dim, cand.shape[0]
    cfg = dataclasses.replace(cfg, prior=None)
    mids = torch.as_tensor(disc.midpoints())
    sources = []
    if prior is not None:  # one beam: with the prior's noise-free actions all rows are equal
        cfg = dataclasses.replace(cfg, beam_width=1, n_expand=1)
        sources.append(PriorCandidates(PriorProposals(prior, disc, o, a, noise=0.0), 1, mids))
    source = Chain([*sources, FirstAction(cand)])  # the candidate first, then the prior
    obs_k = torch.zeros(k, o, dtype=torch.float64)
    if obs is not None:
        obs_k = torch.as_tensor(np.repeat(obs[None], k, axis=0), dtype=torch.float64)
    gens = [torch.Generator().manual_seed(i) for i in range(k)]  # draws only break ties here
    u = Uniforms(gens, uniforms_per_plan(cfg, o, a, source.draws_per_step), "cpu")
    return beam_search(
        model, context.expand(k, -1), cfg, mids, u, plan_window(model, cfg),
        source=source, obs=obs_k, scorer=scorer,
    )  # fmt: skip


def model_scores(
    ckpt, prior, cfg, context: torch.Tensor, obs: np.ndarray, cand: torch.Tensor, scorer=None
):
    """The planner's score of "take each candidate, then follow the prior" (with `scorer`
    as its scorer) and the model's expected first reward: ([K], [K]) float64."""
    plan = plan_from(ckpt, cfg, context, cand, prior=prior, obs=obs, scorer=scorer)
    return plan.value.numpy(), plan.rewards[:, 0].numpy()


@torch.inference_mode()
def model_candidates(ckpt, cfg, context: torch.Tensor, k: int, gen: torch.Generator):
    """[k, a] action tokens drawn from the model after context [1, P], as the reference
    search draws a step's candidates (cdf and top-k filters of the run's plan config)."""
    from trajplan.planner import plan_window, sample_token
    from trajplan.planner.windows import FullWindow

    model = ckpt.model
    o, a, D = model.cfg.obs_dim, model.cfg.act_dim, model.transition_dim
    win = FullWindow(model, plan_window(model, cfg), D - o)
    logits = win.begin(context)
    win.select(torch.zeros(k, dtype=torch.long))
    logits = logits.expand(k, -1)
    toks = []
    for _ in range(a):
        u = torch.rand(k, generator=gen, dtype=torch.float64)
        tok, _ = sample_token(logits, u, cfg.k_act, cfg.cdf_act)
        toks.append(tok)
        logits = win.feed(tok)
    return torch.stack(toks, 1)


def search_scores(
    ckpt, cfg, context: torch.Tensor, obs: np.ndarray, cand: torch.Tensor, scorer=None
) -> np.ndarray:
    """[K] the plan value of the run's own search (no prior; `scorer` ranks its beams) from
    each candidate."""
    return plan_from(ckpt, cfg, context, cand, obs=obs, scorer=scorer).value.numpy()


class Simulator:
    """The counterfactual copy of an env: set to a recorded state, stepped without its time
    limit, flat observations. Goal mazes step their inner robot's physics (point_env,
    ant_env) through the maze env, which keeps the goal and the reward."""

    def __init__(self, env_name: str) -> None:
        self.env = make_env(env_name)
        self.env.reset(seed=0)
        self.base = self.env.unwrapped

    @staticmethod
    def state_of(env) -> tuple:
        """(qpos, qvel, goal or None) of a live env."""
        base = env.unwrapped
        phys = _physics(base)
        goal = getattr(base, "goal", None)
        return phys.data.qpos.copy(), phys.data.qvel.copy(), None if goal is None else goal.copy()

    def set(self, state: tuple) -> None:
        qpos, qvel, goal = state
        _physics(self.base).set_state(qpos, qvel)
        if goal is not None:
            self.base.goal = goal.copy()

    def step(self, act: np.ndarray) -> tuple[np.ndarray, float, bool]:
        obs, r, term, _, _ = self.base.step(act)
        return (flatten_goal_obs(obs) if isinstance(obs, dict) else obs), float(r), bool(term)


def _physics(base):
    """The MuJoCo env whose qpos/qvel hold the state: the env, or a maze's robot."""
    return getattr(base, "point_env", None) or getattr(base, "ant_env", None) or base


def true_returns(sim: Simulator, state, actions: np.ndarray, prior, steps: int, gamma: float,
                 view):  # fmt: skip
    """[K] discounted return of taking each action from `state` (Simulator.state_of), then
    the prior, and [K] the first step's reward."""
    out, first_r = np.zeros(len(actions)), np.zeros(len(actions))
    for k, first in enumerate(actions):
        sim.set(state)
        act, ret, disc = first, 0.0, 1.0
        for i in range(steps):
            obs, r, term = sim.step(act)
            if i == 0:
                first_r[k] = r
            ret += disc * r
            disc *= gamma
            if term:
                break
            act = prior.act(view(obs)[None])[0]
        out[k] = ret
    return out, first_r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a trained TT run")
    ap.add_argument("--prior", required=True, help="a BC run or actor file (plan.prior)")
    ap.add_argument("--episodes", type=int, default=3, help="prior episodes to take states from")
    ap.add_argument("--every", type=int, default=25, help="take a state every N steps")
    ap.add_argument("--candidates", type=int, default=16, help="candidate actions per state")
    ap.add_argument("--noise", type=float, default=None, help="default: the run's prior_noise")
    ap.add_argument(
        "--lookahead",
        choices=("prior", "search"),
        default="prior",
        help="the model's score: follow the prior, or the run's own search from the action",
    )
    ap.add_argument(
        "--source",
        choices=("prior", "model"),
        default="prior",
        help="candidates: the prior's action plus noise, or drawn from the model (reference)",
    )
    ap.add_argument(
        "--critic",
        default=None,
        help="an IQL run: score as TT + Q, with its critic as the planner's scorer",
    )
    ap.add_argument(
        "--horizon",
        type=int,
        default=None,
        help="the model's lookahead in plan steps (default: the run's plan.horizon); with "
        "--critic, 1 scores Q(s, candidate) itself",
    )
    ap.add_argument("--steps", type=int, default=200, help="simulator steps after the candidate")
    ap.add_argument("--seed", type=int, default=0, help="first episode seed")
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from trajplan.envs.registry import make_env, obs_view, resolve_env
    from trajplan.errors import TrajplanError
    from trajplan.planner.planner import VALUE_PLACEHOLDER
    from trajplan.planner.prior import load_prior
    from trajplan.planner.scorers import CriticScorer
    from trajplan.runs import load_critic
    from trajplan.runs.checkpoint import load_checkpoint

    console, err = Console(), Console(stderr=True)
    torch.set_num_threads(1)
    try:
        for name in ("episodes", "every", "steps"):
            if getattr(args, name) < 1:
                raise TrajplanError(f"--{name} must be at least 1")
        if args.candidates < 2:
            raise TrajplanError("--candidates must be at least 2 (a ranking needs two)")
        ckpt = load_checkpoint(args.run, device="cpu")
        prior = load_prior(args.prior)
        cfg = ckpt.config.plan
        if args.horizon is not None:
            if args.horizon < 1:
                raise TrajplanError(f"--horizon must be at least 1, got {args.horizon}")
            cfg = dataclasses.replace(cfg, horizon=args.horizon)
        noise = cfg.prior_noise if args.noise is None else args.noise
        if not noise > 0:
            raise TrajplanError("--noise must be > 0: the candidates must differ")
        info = resolve_env(ckpt.env)
        o, a = ckpt.model.cfg.obs_dim, ckpt.model.cfg.act_dim
        if (prior.obs_dim, prior.act_dim) != (o, a):
            raise TrajplanError(
                f"the prior acts on {prior.obs_dim}/{prior.act_dim} dims, the model {o}/{a}"
            )
        scorer = None  # the model's own value
        if args.critic:  # TT + Q: the IQL run's critic scores, as plan.critic does
            critic = load_critic(args.critic, ckpt.env)
            scorer = CriticScorer(critic, cfg.discount)
    except TrajplanError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        return 2
    disc = ckpt.discretizer

    def view(x: np.ndarray) -> np.ndarray:
        return obs_view(info, x)

    low, high = np.asarray(prior.action_low, float), np.asarray(prior.action_high, float)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    corr, corr_r, pick, best, own = [], [], [], [], []
    edge_pick, edge_all = [], []  # share of action dims in an outermost bin: pick, all
    env = make_env(ckpt.env)
    sim = Simulator(ckpt.env)  # the counterfactual copy, set to each state
    limit = int(env.spec.max_episode_steps or 1000) if env.spec else 1000
    for e in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + e)
        history: list[np.ndarray] = []  # past transitions [o + a + 2]
        for t in range(limit):
            seen = view(obs)
            if t % args.every == 0:
                state = Simulator.state_of(env)
                base = prior.act(seen[None])[0].astype(np.float64)
                eps = rng.standard_normal((args.candidates, a))
                eps[0] = 0.0
                acts = np.clip(base + noise * 0.5 * (high - low) * eps, low, high)
                tok = disc.discretize(acts, dims=slice(o, o + a))  # [K, a]
                past = history[-cfg.max_context_transitions :]
                ctx = [disc.discretize(np.stack(past)).reshape(-1)] if past else []
                ctx.append(disc.discretize(seen[None], dims=slice(0, o))[0])
                context = torch.as_tensor(np.concatenate(ctx))[None]
                if args.source == "model":  # the reference's candidates instead
                    tok = model_candidates(ckpt, cfg, context, args.candidates, gen).numpy()
                acts = disc.reconstruct(tok, dims=slice(o, o + a))  # what the planner executes
                cand = torch.as_tensor(tok)
                score, r0 = model_scores(ckpt, prior, cfg, context, seen, cand, scorer)
                if args.lookahead == "search":
                    score = search_scores(ckpt, cfg, context, seen, cand, scorer)
                true, true_r0 = true_returns(
                    sim, state, acts, prior, args.steps, cfg.discount, view
                )
                for out, c in ((corr, spearman(score, true)), (corr_r, spearman(r0, true_r0))):
                    if c is not None:
                        out.append(c)
                pick.append(true[int(np.argmax(score))] - true.mean())
                edge = (tok == 0) | (tok == disc.n_bins - 1)  # [K, a]: at an action bound
                edge_pick.append(float(edge[int(np.argmax(score))].mean()))
                edge_all.append(float(edge.mean()))
                best.append(true.max() - true.mean())
                if args.source == "prior":
                    own.append(true[0] - true.mean())
            action = prior.act(seen[None])[0]
            obs, r, term, trunc, _ = env.step(action)
            history.append(np.concatenate([seen, action, [r, VALUE_PLACEHOLDER]]))
            if term or trunc:
                break
        print(f"episode {e + 1}/{args.episodes}: {len(pick)} states so far", flush=True)
    if not pick:
        err.print("[red]error:[/] no states: the prior's episodes ended too early")
        return 2

    def ms(x: list[float]) -> tuple[float, float]:
        v = np.asarray(x, dtype=np.float64)
        return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0

    scored = "TT + Q" if args.critic else "model"
    title = f"{ckpt.dataset_id}: {len(pick)} states, {args.candidates} candidates"
    if args.critic:
        title += ", TT + Q (critic Q)"
    table = Table(title=title)
    for col in ("", "mean", "stderr", "states"):
        table.add_column(col, justify="left" if not col else "right")
    rows = [  # (label, one value per state that has one)
        (f"rank correlation ({scored} vs true)", corr),
        ("rank correlation, first reward only", corr_r),
        (f"true return: {scored}'s pick - mean", pick),
        ("true return: best candidate - mean", best),
        ("true return: noise-free prior - mean", own),
    ]
    for label, values in rows:
        m, se = ms(values) if values else (float("nan"), float("nan"))
        table.add_row(label, f"{m:.3f}", f"{se:.3f}", str(len(values)))
    console.print(table)
    print(
        f"action dims in an outermost bin: {scored}'s pick {ms(edge_pick)[0]:.3f}, "
        f"all candidates {ms(edge_all)[0]:.3f}"
    )
    r_m, r_s = ms(corr) if corr else (None, None)  # None: every state's scores tied
    rr_m, rr_s = ms(corr_r) if corr_r else (None, None)
    figures = {
        "states": len(pick),
        "ranked_states": len(corr),  # states whose scores and true returns both differ
        "rank_corr": None if r_m is None else round(r_m, 4),
        "rank_corr_stderr": None if r_s is None else round(r_s, 4),
        "reward_rank_corr": None if rr_m is None else round(rr_m, 4),
        "reward_rank_corr_stderr": None if rr_s is None else round(rr_s, 4),
        "pick_gain_return": round(ms(pick)[0], 3),
        "best_gain_return": round(ms(best)[0], 3),
        "prior_gain_return": round(ms(own)[0], 3) if own else None,
        "pick_edge_share": round(ms(edge_pick)[0], 4),
        "candidates_edge_share": round(ms(edge_all)[0], 4),
        "source": args.source,
        "lookahead": args.lookahead,
        "scorer": "critic" if args.critic else "value",
        "critic": str(Path(args.critic)) if args.critic else None,
        "noise": noise,
        "horizon": cfg.horizon,
        "run": str(Path(args.run)),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
