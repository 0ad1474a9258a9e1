"""Does TT plan better than its data? Train the CPU recipe and the baselines (BC, wBC, IQL)
on one dataset, evaluate all on the same episode seeds, and compare with the dataset's mean.

    python scripts/bench_learning.py --dataset local/halfcheetah/mixed-v0
    python scripts/bench_learning.py --dataset mujoco/hopper/medium-v0 --config cpu-small
    python scripts/bench_learning.py --dataset ID --tt-run RUN --bc-run RUN   # reuse runs
    python scripts/bench_learning.py --dataset ID --iql-run RUN --critic-form v
    python scripts/bench_learning.py --dataset ID --no-prior   # skip TT with the wBC prior
    python scripts/bench_learning.py --dataset local/pointmaze/medium-v0 --config pointmaze-medium

Nine policies on the same seeds: BC (plain), wBC (return-weighted BC, `trajplan bc
--action-weighting 2`), IQL (`trajplan iql` with the env's preset, `--iql-steps` updates),
TT (the recipe's own search), TT + Q (the TT run planning with the IQL run as its
`plan.critic`: the critic's Q, or V with `--critic-form v`, scores the beams instead of the
model's value; its candidates are the IQL actor's, `--prior` too, unless `--ttq-candidates
model`); with IQL's candidates, the critic alone (TT + Q at horizon 1 in the q form: Q of
each candidate itself) and IQL with the prior's noise (the same candidates picked at random), so
`ttq_h1_minus_iql_noisy` is what the critic's pick adds; TT with the wBC run as its
`plan.prior` (the search's candidates are wBC's actions plus a little noise, scored by the
model; docs/method.md), and wBC with that same noise on every action: the search's
candidates picked at random, so `tt_prior_minus_wbc_noisy` is what the model's scoring adds.

Any Minari dataset id (local or downloaded; MINARI_DATASETS_PATH is honoured), MuJoCo or a
goal maze. Scores are D4RL-normalized with the dataset's reference scores when it stores
them, else the D4RL constants; the table says which. Where the env reports success (the
mazes) the table gains a success column and the JSON `<row>_success` (the share of episodes
that reached the goal). A maze dataset's episodes are goal segments of a stream collected
with new goals on arrival, not the evaluated task: its dataset row has no score (None).
TT plans with the config's own planning settings (the recipe: horizon 5, beam 32).
Evaluation runs over --workers processes (the same episodes as one process). Prints a
table, then as its last line one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def dataset_score(dataset_id: str) -> tuple[float | None, float | None, int, str, str | None]:
    """Mean and stderr of the normalized return of the dataset's whole episodes, their
    count, the reference scores, and a note (else None) when the data's episodes are not the
    evaluated task (a goal maze's segments, collected with new goals on arrival): then
    there is no score to compare with (mean and stderr None)."""
    from trajplan.data.transitions import load_episodes
    from trajplan.envs.references import references_for
    from trajplan.envs.registry import env_for_dataset, resolve_env
    from trajplan.evaluation.scores import stderr

    ep = load_episodes(dataset_id)
    info = None
    try:
        info = resolve_env(ep.env_id) if ep.env_id else env_for_dataset(dataset_id)
    except Exception:  # an env id the registry does not know
        info = env_for_dataset(dataset_id)
    refs = references_for(info.name, ep.ref_min, ep.ref_max, ep.ref_source or "")
    if info.collect_kwargs is not None:  # collected in another task than the evaluated one
        note = "goal segments collected with new goals on arrival: not the evaluated task"
        return None, None, len(ep.lengths), refs.describe(), note
    last = ep.starts + ep.lengths - 1
    cut = ep.truncations[last] & ~ep.terminations[last]
    cut &= ep.lengths < (ep.lengths.max())  # the collector's final, shortened episode
    scores = np.array([refs.score(r) for r in ep.returns()[~cut]], dtype=np.float64)
    return float(scores.mean()), float(stderr(scores) or 0.0), len(scores), refs.describe(), None


def evaluate_and_save(
    run: Path,
    eval_kw: dict,
    args: argparse.Namespace,
    prior: Path | None = None,
    action_noise: float = 0.0,
    critic: Path | None = None,
    horizon: int | None = None,
    critic_form: str | None = None,
) -> dict:
    """Evaluate a run (a TT run with `prior`: that BC run as its plan.prior; with `critic`:
    that IQL run as its plan.critic, in `critic_form` or args.critic_form; with `horizon`, planning
    that many steps; a policy run with `action_noise`), write RUN/eval/<what>/eval.json +
    eval.png, return the summary."""
    from trajplan.checkpoint import read_manifest
    from trajplan.evaluation.evalfiles import eval_name, save_eval
    from trajplan.evaluation.evaluate import with_overrides
    from trajplan.evaluation.workers import evaluate_run
    from trajplan.runtime import unique_dir

    plan_cfg = None
    if prior is not None or critic is not None or horizon is not None:
        plan_cfg = with_overrides(
            read_manifest(run)[0].plan,
            prior=None if prior is None else str(prior),
            critic=None if critic is None else str(critic),
            critic_form=None if critic is None else (critic_form or args.critic_form),
            horizon=horizon,
        )
    result = evaluate_run(
        run, **eval_kw, plan_cfg=plan_cfg, progress=False, action_noise=action_noise
    )
    plan = None
    if result.plan.get("horizon") is not None:
        from trajplan.config import PlanConfig, from_dict

        plan = from_dict(PlanConfig, result.plan, "plan")
    name = eval_name(args.episodes, args.seed, plan, args.episode_steps, action_noise)
    dest = unique_dir(run / "eval", name)
    save_eval(result, dest, run / "metrics.jsonl")
    return result.summary()


def rounded(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def minus(a: float | None, b: float | None) -> float | None:
    """a - b, rounded; None when either is unknown."""
    return None if a is None or b is None else round(a - b, 2)


def train_minutes(run: Path) -> float:
    """The training time a reused run's config.json records, in minutes."""
    return json.loads((run / "config.json").read_text()).get("wall_s", 0) / 60


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", required=True, help="Minari dataset id")
    ap.add_argument("--config", default="cpu-recipe", help="a shipped config's name or a YAML file")
    ap.add_argument("--set", action="append", default=[], help="config override a.b=v")
    ap.add_argument("--episodes", type=int, default=5, help="evaluation episodes (>= 5)")
    ap.add_argument("--seed", type=int, default=0, help="first evaluation seed")
    ap.add_argument("--episode-steps", type=int, default=None, help="cap (not comparable)")
    ap.add_argument("--workers", type=int, default=None, help="eval processes (default: cores)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="TT and IQL training threads (default 1, fastest for the small recipe model)",
    )
    ap.add_argument("--bc-steps", type=int, default=20_000)
    ap.add_argument(
        "--iql-steps",
        type=int,
        default=50_000,
        help="IQL updates (the paper: 1M; 50k take about 10 minutes on one CPU thread; "
        "not settled on the mazes: the large one went 82 -> 183 from 100k to 200k, "
        "docs/results.md)",
    )
    ap.add_argument("--out", default=None, help="folder for the runs (default runs/bench-...)")
    ap.add_argument("--tt-run", default=None, help="evaluate this TT run instead of training")
    ap.add_argument("--bc-run", default=None, help="evaluate this BC run instead of training")
    ap.add_argument("--wbc-run", default=None, help="evaluate this wBC run instead of training")
    ap.add_argument(
        "--iql-run", default=None, help="use this IQL run (baseline and critic) instead of training"
    )
    ap.add_argument("--wbc-beta", type=float, default=2.0, help="wBC's return weighting")
    ap.add_argument(
        "--critic-form",
        choices=("q", "v"),
        default="q",
        help="TT + Q scores a beam by the critic's Q of its last planned state and action (q) "
        "or V of that state (v)",
    )
    ap.add_argument(
        "--ttq-candidates",
        choices=("iql", "model"),
        default="iql",
        help="TT + Q's candidate actions: the IQL actor's plus noise (iql: `--critic RUN "
        "--prior RUN`, the measured best pairing) or the model's own samples (model)",
    )
    ap.add_argument(
        "--prior",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also evaluate TT with the wBC run as its plan.prior (its actions as candidates)",
    )
    args = ap.parse_args(argv)

    import dataclasses

    import torch
    from rich.console import Console
    from rich.table import Table

    from trajplan.baselines.bc import BCConfig, train_bc
    from trajplan.baselines.iql import dataset_env, iql_preset, train_iql
    from trajplan.configs import apply_overrides, load_config
    from trajplan.errors import TrajplanError
    from trajplan.evaluation.workers import default_workers
    from trajplan.runs import load_critic
    from trajplan.training.loop import train

    console = Console()
    try:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", args.dataset).strip("-")
        out = Path(args.out or f"runs/bench-learning/{slug}-{time.strftime('%Y%m%d-%H%M%S')}")
        ds_mean, ds_err, ds_n, ref, ds_note = dataset_score(args.dataset)
        info = dataset_env(args.dataset)
        if args.iql_run:  # before any training: an IQL run whose critic fits this env
            load_critic(args.iql_run, info.name)
        iql_cfg = dataclasses.replace(iql_preset(info.gym_id), steps=args.iql_steps)
        iql_cfg.check()  # a bad --iql-steps fails now too
        seeds = list(range(args.seed, args.seed + args.episodes))
        workers = args.workers or default_workers()
        eval_kw = dict(seeds=seeds, episode_steps=args.episode_steps, workers=workers)
        figures: dict[str, object] = {"dataset_id": args.dataset, "episodes": args.episodes}

        t0 = time.perf_counter()
        torch.set_num_threads(1)  # planning and BC: one thread per process is fastest
        bc_run = Path(args.bc_run) if args.bc_run else train_bc(
            args.dataset, out / "bc", BCConfig(steps=args.bc_steps), progress=False
        )  # fmt: skip
        bc_train_min = (time.perf_counter() - t0) / 60 if not args.bc_run else None
        bc = evaluate_and_save(bc_run, eval_kw, args)
        wbc_run = Path(args.wbc_run) if args.wbc_run else train_bc(
            args.dataset, out / "wbc",
            BCConfig(steps=args.bc_steps, action_weighting=args.wbc_beta), progress=False,
        )  # fmt: skip
        wbc = evaluate_and_save(wbc_run, eval_kw, args)

        t0 = time.perf_counter()
        if args.iql_run:
            iql_run = Path(args.iql_run)
            iql_train_min = train_minutes(iql_run)
        else:
            torch.set_num_threads(args.threads or 1)
            iql_run = train_iql(args.dataset, out / "iql", iql_cfg, progress=False, env=info.name)
            iql_train_min = (time.perf_counter() - t0) / 60
            torch.set_num_threads(1)
        iql_steps = json.loads((iql_run / "config.json").read_text())["config"]["steps"]
        iql = evaluate_and_save(iql_run, eval_kw, args)

        t0 = time.perf_counter()
        if args.tt_run:
            tt_run = Path(args.tt_run)
            tt_train_min = train_minutes(tt_run)
        else:
            cfg = load_config(args.config)
            cfg.dataset = args.dataset
            apply_overrides(cfg, args.set)
            torch.set_num_threads(args.threads or 1)  # the small recipe model: 1 is fastest
            tt_run = train(cfg, out / "tt", progress=False)
            tt_train_min = (time.perf_counter() - t0) / 60
            torch.set_num_threads(1)
        t0 = time.perf_counter()
        tt = evaluate_and_save(tt_run, eval_kw, args)
        tt_eval_min = (time.perf_counter() - t0) / 60
        t0 = time.perf_counter()
        ttq_prior = iql_run if args.ttq_candidates == "iql" else None  # the measured best
        ttq = evaluate_and_save(tt_run, eval_kw, args, critic=iql_run, prior=ttq_prior)
        ttq_eval_min = (time.perf_counter() - t0) / 60
        from trajplan.checkpoint import read_manifest

        noise = read_manifest(tt_run)[0].plan.prior_noise  # the search's candidates' noise
        ttq_h1 = iql_noisy = None
        if ttq_prior is not None:  # does the critic's pick beat a random pick of the same?
            ttq_h1 = evaluate_and_save(  # Q(s, a) of each candidate (V(s) would tie them all)
                tt_run, eval_kw, args, critic=iql_run, prior=iql_run, horizon=1, critic_form="q"
            )
            iql_noisy = evaluate_and_save(iql_run, eval_kw, args, action_noise=noise)
        ttp = wbc_noisy = None
        if args.prior:
            ttp = evaluate_and_save(tt_run, eval_kw, args, prior=wbc_run)
            wbc_noisy = evaluate_and_save(wbc_run, eval_kw, args, action_noise=noise)
    except TrajplanError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return 2

    def cell(mean: float | None, err: float | None) -> str:
        return "-" if mean is None else f"{mean:.1f}" + ("" if err is None else f" ± {err:.1f}")

    rows = [
        ("BC", "bc", bc, bc_train_min),
        ("wBC", "wbc", wbc, None),
        ("IQL", "iql", iql, iql_train_min),
        ("TT", "tt", tt, tt_train_min),
        (f"TT + Q (IQL's {args.critic_form.upper()})", "ttq", ttq, None),
    ]
    if ttq_h1 is not None and iql_noisy is not None:
        rows.append(("critic alone: Q of IQL's candidates (horizon 1)", "ttq_h1", ttq_h1, None))
        rows.append(("IQL + the prior's noise (its candidates at random)", "iql_noisy",
                     iql_noisy, None))  # fmt: skip
    if ttp is not None and wbc_noisy is not None:
        rows.append(("TT, wBC as prior", "tt_prior", ttp, None))
        rows.append(("wBC + the prior's noise (no search)", "wbc_noisy", wbc_noisy, None))
    goal = any(s.get("success_rate") is not None for _, _, s, _ in rows)  # the env reports it

    table = Table(title=f"{args.dataset}: {args.episodes} episodes, seeds {seeds[0]}..{seeds[-1]}")
    columns = ["", "normalized score", "return", *(["success"] if goal else []), "train min"]
    for col in columns:
        table.add_column(col, justify="left" if not col else "right")
    table.add_row(
        f"dataset ({ds_n} episodes)", cell(ds_mean, ds_err), "", *[""] * (len(columns) - 3)
    )
    for name, _, s, minutes in rows:
        rate = s.get("success_rate")
        table.add_row(
            name,
            cell(s["score_mean"], s["score_stderr"]),
            cell(s["return_mean"], s["return_stderr"]),
            *([("-" if rate is None else f"{rate:.2f}")] if goal else []),
            "-" if minutes is None else f"{minutes:.1f}",
        )
    console.print(table)
    console.print(f"reference scores: {ref}", highlight=False)
    which = "IQL's actor (--prior IQL)" if args.ttq_candidates == "iql" else "the model's"
    console.print(f"TT + Q's candidate actions: {which}", highlight=False)
    if ds_note:
        console.print(f"dataset: {ds_note} (no score)", highlight=False)
    diag = tt.get("diagnostics") or {}
    if diag:

        def num(key: str) -> float:  # None (e.g. a constant reward): nan
            x = diag.get(key)
            return float("nan") if x is None else float(x)

        console.print(
            f"TT diagnostics: reward corr {num('reward_corr'):.3f}, "
            f"return bias {num('return_bias'):.1f} "
            f"(predicted {num('return_pred_mean'):.1f} vs realized "
            f"{num('return_realized_mean'):.1f})",
            highlight=False,
        )
    figures.update(
        dataset_normalized=rounded(ds_mean),
        dataset_stderr=rounded(ds_err),
        bc_normalized=rounded(bc["score_mean"]),
        bc_stderr=round(bc["score_stderr"] or 0.0, 2),
        wbc_normalized=rounded(wbc["score_mean"]),
        wbc_stderr=round(wbc["score_stderr"] or 0.0, 2),
        tt_normalized=rounded(tt["score_mean"]),
        tt_stderr=round(tt["score_stderr"] or 0.0, 2),
        tt_minus_bc=minus(tt["score_mean"], bc["score_mean"]),
        tt_minus_dataset=minus(tt["score_mean"], ds_mean),
        tt_train_min=rounded(tt_train_min, 1),
        bc_train_min=rounded(bc_train_min, 1),
        tt_eval_min=round(tt_eval_min, 1),
        tt_ms_per_step=tt["ms_per_step"],
        comparable=tt["comparable"],
        reference=ref,
        tt_run=str(tt_run),
        bc_run=str(bc_run),
        wbc_run=str(wbc_run),
        tt_reward_corr=diag.get("reward_corr"),
        tt_return_bias=diag.get("return_bias"),
        iql_normalized=rounded(iql["score_mean"]),
        iql_stderr=round(iql["score_stderr"] or 0.0, 2),
        iql_minus_bc=minus(iql["score_mean"], bc["score_mean"]),
        iql_train_min=rounded(iql_train_min, 1),
        iql_steps=iql_steps,
        iql_run=str(iql_run),
        ttq_normalized=rounded(ttq["score_mean"]),
        ttq_stderr=round(ttq["score_stderr"] or 0.0, 2),
        ttq_minus_tt=minus(ttq["score_mean"], tt["score_mean"]),
        ttq_minus_iql=minus(ttq["score_mean"], iql["score_mean"]),
        ttq_eval_min=round(ttq_eval_min, 1),
        ttq_ms_per_step=ttq["ms_per_step"],
        critic_form=args.critic_form,
        ttq_candidates=args.ttq_candidates,
    )
    if ds_note:
        figures["dataset_note"] = ds_note
    if ttq_h1 is not None and iql_noisy is not None:
        figures.update(
            ttq_h1_normalized=rounded(ttq_h1["score_mean"]),
            ttq_h1_stderr=round(ttq_h1["score_stderr"] or 0.0, 2),
            iql_noisy_normalized=rounded(iql_noisy["score_mean"]),
            iql_noisy_stderr=round(iql_noisy["score_stderr"] or 0.0, 2),
            # what the critic's pick adds over a random pick of the same candidates
            ttq_h1_minus_iql_noisy=minus(ttq_h1["score_mean"], iql_noisy["score_mean"]),
        )
    if ttp is not None and wbc_noisy is not None:
        figures.update(
            tt_prior_normalized=rounded(ttp["score_mean"]),
            tt_prior_stderr=round(ttp["score_stderr"] or 0.0, 2),
            tt_prior_minus_bc=minus(ttp["score_mean"], bc["score_mean"]),
            tt_prior_minus_wbc=minus(ttp["score_mean"], wbc["score_mean"]),
            tt_prior_minus_dataset=minus(ttp["score_mean"], ds_mean),
            tt_prior_action_share=(ttp.get("diagnostics") or {}).get("prior_action_share"),
            wbc_noisy_normalized=rounded(wbc_noisy["score_mean"]),
            wbc_noisy_stderr=round(wbc_noisy["score_stderr"] or 0.0, 2),
            tt_prior_minus_wbc_noisy=minus(ttp["score_mean"], wbc_noisy["score_mean"]),
        )
    for _, key, s, _ in rows:  # goal tasks: the share of episodes that reached the goal
        if s.get("success_rate") is not None:
            figures[f"{key}_success"] = round(s["success_rate"], 3)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
