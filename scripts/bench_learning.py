"""Does TT plan better than its data? Train the CPU recipe and the baselines (BC, wBC, IQL)
on one dataset, evaluate all on the same episode seeds, and compare with the dataset's mean.

    python scripts/bench_learning.py --dataset local/halfcheetah/mixed-v0
    python scripts/bench_learning.py --dataset mujoco/hopper/medium-v0 --config cpu-small
    python scripts/bench_learning.py --dataset ID --tt-run RUN --bc-run RUN   # reuse runs
    python scripts/bench_learning.py --dataset ID --no-prior   # skip TT with the wBC prior
    python scripts/bench_learning.py --dataset local/pointmaze/medium-v0 --config pointmaze-medium
    python scripts/bench_learning.py --dataset ID --seeds 0-2   # over training seeds

Ten policies on the same seeds: BC (plain), wBC (return-weighted BC, `trajplan bc
--action-weighting 2`), IQL (`trajplan iql` with the env's preset, `--iql-steps` updates),
TT (the recipe's own search), TT + Q (`ttq`: the TT run planning with the IQL run as its
`plan.critic`: the critic's Q scores the beams instead of the
model's value; its candidates are the IQL actor's, `--prior` too, unless `--ttq-candidates
model`), TT + Q over the model's own candidates (`ttq_own`: `trajplan eval TT --critic IQL`
without --prior), the critic alone (`critic_h1`: TT + Q over IQL's candidates at horizon 1,
the Q of each candidate itself) and IQL with the prior's noise (the same candidates
picked at random), so `critic_h1_minus_iql_noisy` is what the critic's pick adds; TT with
the wBC run as its `plan.prior` (the search's candidates are wBC's actions plus a little
noise, scored by the model; docs/method.md), and wBC with that same noise on every action:
the search's candidates picked at random, so `tt_prior_minus_wbc_noisy` is what the model's
scoring adds.

--seeds 0-2 (any list or range `trajplan train --seeds` takes) trains every learned row once
per training seed (OUT/seed<S>/{bc,wbc,iql,tt}: BC, wBC and IQL with seed S, TT with
train.seed S); each combined row pairs the runs of one seed (TT + Q, the critic alone: that
seed's TT and IQL; TT + prior: its TT and wBC), and every row plays the same episodes. The
table then gives per row the mean over seeds of the per-seed mean score, the IQM of all
episodes with a 95% bootstrap CI over seeds and episodes (trajplan/evaluation/aggregate.py's
iqm and bootstrap_ci, as `trajplan aggregate` computes them), the per-seed means, and a
block of paired differences (same seed, same episodes: the mean over seeds, its CI from the
same bootstrap over the per-episode differences, and how many seeds favour each side).
Reused runs (--tt-run, ...) then name their seed as {seed} in the path. JSON: per row
`<row>_normalized` (the mean over seeds) and `<row>_iqm`, `<row>_ci_low`, `<row>_ci_high`;
per comparison `<a>_minus_<b>_mean`, `_ci_low`, `_ci_high`, `_seeds_above`, `_seeds_below`;
`<kind>_runs` lists each seed's run. Without --seeds, one run of each with its own default
seed, and `<kind>_run` names it.

Any Minari dataset id (local or downloaded; MINARI_DATASETS_PATH is honoured), MuJoCo or a
goal maze. Scores are D4RL-normalized with the dataset's reference scores when it stores
them, else the D4RL constants; the table says which. Where the env reports success (the
mazes) the table gains a success column and the JSON `<row>_success` (the share of episodes
that reached the goal). A maze dataset's episodes are goal segments of a stream collected
with new goals on arrival, not the evaluated task: its dataset row has no score (None).
TT plans with the config's own planning settings (the recipe: horizon 5, beam 32).
Evaluation runs over --workers processes (the same episodes as one process). An
evaluation already saved next to a run (the same episodes, plan and noise, written after
its weights) is read back instead of played again: after a stop, give the runs trained so
far (--tt-run ... with {seed}) and the same settings, and only what is missing runs; seeds
trained by separate commands combine the same way. Prints a table, then as its last line
one JSON object of the figures.
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
) -> dict:
    """Evaluate a run (a TT run with `prior`: that BC run as its plan.prior; with `critic`:
    that IQL run as its plan.critic; with `horizon`, planning
    that many steps; a policy run with `action_noise`), write RUN/eval/<what>/eval.json +
    eval.png, return the summary with each episode's score and seed and the eval.json's path.
    The same evaluation saved by an earlier call (`saved_eval`) is read instead: a stopped
    benchmark, run again, goes on where it was."""
    from trajplan.configs.convert import to_dict
    from trajplan.evaluation.evalfiles import eval_name, save_eval
    from trajplan.evaluation.evaluate import with_overrides
    from trajplan.evaluation.workers import evaluate_run
    from trajplan.runs.checkpoint import read_manifest
    from trajplan.runs.load import run_kind
    from trajplan.runtime import unique_dir

    own = read_manifest(run)[0].plan if run_kind(run) == "tt" else None  # a policy run: none
    plan_cfg = None  # the run's own plan
    if prior is not None or critic is not None or horizon is not None:
        plan_cfg = with_overrides(
            own,
            prior=None if prior is None else str(prior),
            critic=None if critic is None else str(critic),
            horizon=horizon,
        )
    plan_doc = None if own is None else to_dict(plan_cfg or own)
    saved = saved_eval(run, eval_kw["seeds"], eval_kw["episode_steps"], plan_doc, action_noise)
    if saved is not None:
        return saved
    result = evaluate_run(
        run, **eval_kw, plan_cfg=plan_cfg, progress=False, action_noise=action_noise
    )
    plan = None
    if result.plan.get("horizon") is not None:
        from trajplan.config import PlanConfig
        from trajplan.configs.convert import from_dict

        plan = from_dict(PlanConfig, result.plan, "plan")
    name = eval_name(args.episodes, args.seed, plan, args.episode_steps, action_noise)
    dest = unique_dir(run / "eval", name)
    path = save_eval(result, dest, run / "metrics.jsonl")
    return {
        **result.summary(),
        "scores": [e.score for e in result.episodes],
        "episode_seeds": [e.seed for e in result.episodes],
        "eval_json": str(path),
    }


def saved_eval(
    run: Path,
    seeds: list[int],
    episode_steps: int | None,
    plan: dict | None,
    action_noise: float = 0.0,
) -> dict | None:
    """An evaluation already saved next to the run that is the one asked for, as
    `evaluate_and_save` returns it, else None: complete, the same episode seeds and cap, the
    same plan (a TT run: `plan`, a config's dict, prior and critic compared as resolved
    paths; a policy run: None) and action noise, and written after the run's weights (an
    eval.json of a run's last weights records no step)."""
    from trajplan.errors import TrajplanError
    from trajplan.evaluation.evalfiles import read_eval

    def same(key: str, a: object, b: object) -> bool:
        if key in ("prior", "critic") and isinstance(a, str) and isinstance(b, str):
            return Path(a).resolve() == Path(b).resolve()
        return a == b

    weights = max((p.stat().st_mtime for p in run.glob("*.safetensors")), default=0.0)
    for path in sorted((run / "eval").glob("*/eval.json")):
        try:
            ev = read_eval(path)
        except TrajplanError:
            continue
        got = ev.get("plan") or {}
        if plan is not None and not all(same(k, got[k], v) for k, v in plan.items() if k in got):
            continue
        if (
            not ev.get("interrupted")
            and ev.get("episode_steps") == episode_steps
            and [e.get("seed") for e in ev.get("episodes", [])] == list(seeds)
            and (got.get("action_noise") or 0.0) == action_noise
            and path.stat().st_mtime >= weights
        ):
            return {
                **ev["summary"],
                "scores": [e["score"] for e in ev["episodes"]],
                "episode_seeds": list(seeds),
                "eval_json": str(path),
                "reused": True,
            }
    return None


def rounded(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def minus(a: float | None, b: float | None) -> float | None:
    """a - b, rounded; None when either is unknown."""
    return None if a is None or b is None else round(a - b, 2)


def train_minutes(run: Path) -> float:
    """The training time a reused run's config.json records, in minutes."""
    return json.loads((run / "config.json").read_text()).get("wall_s", 0) / 60


def given_run(pattern: str | None, seed: int | None) -> Path | None:
    """A reused run (--tt-run and the like): the path itself, or with --seeds the pattern
    with {seed} replaced by the training seed."""
    if pattern is None:
        return None
    return Path(pattern if seed is None else pattern.replace("{seed}", str(seed)))


def check_given_runs(args: argparse.Namespace) -> None:
    """With --seeds, a reused run must name its seed ({seed} in the path: one run for every
    seed would pair nothing); without, it must not."""
    from trajplan.errors import TrajplanError

    for opt in ("tt_run", "bc_run", "wbc_run", "iql_run"):
        value = getattr(args, opt)
        if value is None:
            continue
        flag = "--" + opt.replace("_", "-")
        if args.seeds is not None and "{seed}" not in value:
            raise TrajplanError(
                f"{flag} {value}: with --seeds, name each seed's run with {{seed}} in the path "
                f"(e.g. runs/x/seed{{seed}}/tt), or leave it out to train them"
            )
        if args.seeds is None and "{seed}" in value:
            raise TrajplanError(f"{flag} {value}: {{seed}} in a run's path needs --seeds")


def seeded_stats(per_seed: list[list[float]]) -> dict[str, float]:
    """aggregate.py's figures over the training seeds of one row: the mean of the per-seed
    means, the IQM of all their episodes pooled, and the 95% CI of that IQM from its
    two-level bootstrap (seeds with replacement, then each drawn seed's episodes)."""
    from trajplan.evaluation.aggregate import bootstrap_ci, iqm

    arrays = [np.asarray(s, dtype=np.float64) for s in per_seed]
    ci = bootstrap_ci(arrays)["iqm"]
    return {
        "mean": float(np.mean([a.mean() for a in arrays])),
        "iqm": iqm(np.concatenate(arrays)),
        "ci_low": ci[0],
        "ci_high": ci[1],
    }


def paired_stats(a: list[dict], b: list[dict]) -> dict[str, float]:
    """Row a minus row b, paired by training seed and by episode seed (both rows played the
    same episodes): the mean over seeds of the per-seed mean difference, its 95% CI from
    aggregate.py's two-level bootstrap applied to the per-episode differences (seeds with
    replacement, then episodes within each drawn seed, the pairs kept together), and how
    many seeds favour each side. aggregate.py has no paired function; this is it."""
    from trajplan.errors import TrajplanError
    from trajplan.evaluation.aggregate import bootstrap_ci

    diffs = []
    for ea, eb in zip(a, b, strict=True):
        if ea["episode_seeds"] != eb["episode_seeds"]:  # a safeguard: same seeds by design
            raise TrajplanError(f"{ea['eval_json']} and {eb['eval_json']}: other episodes")
        diffs.append(np.asarray(ea["scores"], np.float64) - np.asarray(eb["scores"], np.float64))
    per_seed = np.array([d.mean() for d in diffs])
    ci = bootstrap_ci(diffs)["mean"]
    return {
        "mean": float(per_seed.mean()),
        "ci_low": ci[0],
        "ci_high": ci[1],
        "seeds_above": int((per_seed > 0).sum()),
        "seeds_below": int((per_seed < 0).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", required=True, help="Minari dataset id")
    ap.add_argument("--config", default="cpu-recipe", help="a shipped config's name or a YAML file")
    ap.add_argument("--set", action="append", default=[], help="config override a.b=v")
    ap.add_argument("--episodes", type=int, default=5, help="evaluation episodes (>= 5)")
    ap.add_argument("--seed", type=int, default=0, help="first evaluation (episode) seed")
    ap.add_argument(
        "--seeds",
        default=None,
        help="training seeds, e.g. 0-2 or 0,1,2: every learned row trained once per seed "
        "(OUT/seed<S>/<row>), the rows of one seed paired, IQM with a 95%% bootstrap CI "
        "and paired differences over seeds (default: one run of each, the runs' own seeds)",
    )
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
    reuse = " instead of training (with --seeds: a path with {seed}, e.g. runs/x/seed{seed})"
    ap.add_argument("--tt-run", default=None, help="evaluate this TT run" + reuse)
    ap.add_argument("--bc-run", default=None, help="evaluate this BC run" + reuse)
    ap.add_argument("--wbc-run", default=None, help="evaluate this wBC run" + reuse)
    ap.add_argument(
        "--iql-run", default=None, help="use this IQL run (baseline and critic)" + reuse
    )
    ap.add_argument("--wbc-beta", type=float, default=2.0, help="wBC's return weighting")
    ap.add_argument(
        "--ttq-candidates",
        choices=("iql", "model"),
        default="iql",
        help="TT + Q's candidate actions: the IQL actor's plus noise (iql: `--critic RUN "
        "--prior RUN`, the measured best pairing) or the model's own samples (model); "
        "TT + Q with the model's own candidates is always a row (ttq_own)",
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
    from trajplan.runs.checkpoint import read_manifest
    from trajplan.training.loop import train
    from trajplan.training.seeds import parse_seeds, seed_dir, with_seed

    console = Console()
    try:
        train_seeds: list[int | None] = [None]  # None: each run's own default seed
        if args.seeds is not None:
            train_seeds = list(parse_seeds(args.seeds))
        check_given_runs(args)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", args.dataset).strip("-")
        out = Path(args.out or f"runs/bench-learning/{slug}-{time.strftime('%Y%m%d-%H%M%S')}")
        ds_mean, ds_err, ds_n, ref, ds_note = dataset_score(args.dataset)
        info = dataset_env(args.dataset)
        for s in train_seeds:  # before any training: IQL runs whose critic fits this env
            if args.iql_run:
                load_critic(given_run(args.iql_run, s), info.name)
        iql_base = dataclasses.replace(iql_preset(info.gym_id), steps=args.iql_steps)
        iql_base.check()  # a bad --iql-steps fails now too
        tt_base = load_config(args.config)
        tt_base.dataset = args.dataset
        apply_overrides(tt_base, args.set)
        seeds = list(range(args.seed, args.seed + args.episodes))
        workers = args.workers or default_workers()
        eval_kw = dict(seeds=seeds, episode_steps=args.episode_steps, workers=workers)
        figures: dict[str, object] = {"dataset_id": args.dataset, "episodes": args.episodes}

        # per training seed: its runs, the minutes they trained, and every row's evaluation
        runs: dict[str, list[Path]] = {}
        minutes: dict[str, list[float | None]] = {}
        evals: dict[str, list[dict]] = {}
        eval_min: dict[str, list[float]] = {"tt": [], "ttq": []}

        def keep(table: dict, key: str, value: object) -> None:
            table.setdefault(key, []).append(value)

        for s in train_seeds:
            where = out if s is None else seed_dir(out, s)
            kw = {} if s is None else {"seed": s}
            torch.set_num_threads(1)  # planning and BC: one thread per process is fastest
            for key, weighting in (("bc", 0.0), ("wbc", args.wbc_beta)):
                t0 = time.perf_counter()
                run = given_run(getattr(args, f"{key}_run"), s)
                if run is None:
                    cfg = BCConfig(steps=args.bc_steps, action_weighting=weighting, **kw)
                    run = train_bc(args.dataset, where / key, cfg, progress=False)
                    keep(minutes, key, (time.perf_counter() - t0) / 60)
                else:
                    keep(minutes, key, None)  # a reused BC run: not timed here
                keep(runs, key, run)
                keep(evals, key, evaluate_and_save(run, eval_kw, args))

            t0 = time.perf_counter()
            iql_run = given_run(args.iql_run, s)
            if iql_run is not None:
                keep(minutes, "iql", train_minutes(iql_run))
            else:
                torch.set_num_threads(args.threads or 1)
                iql_cfg = dataclasses.replace(iql_base, **kw)
                iql_run = train_iql(
                    args.dataset, where / "iql", iql_cfg, progress=False, env=info.name
                )
                keep(minutes, "iql", (time.perf_counter() - t0) / 60)
                torch.set_num_threads(1)
            keep(runs, "iql", iql_run)
            keep(evals, "iql", evaluate_and_save(iql_run, eval_kw, args))

            t0 = time.perf_counter()
            tt_run = given_run(args.tt_run, s)
            if tt_run is not None:
                keep(minutes, "tt", train_minutes(tt_run))
            else:
                cfg = tt_base if s is None else with_seed(tt_base, s)
                torch.set_num_threads(args.threads or 1)  # the small model: 1 is fastest
                tt_run = train(cfg, where / "tt", progress=False)
                keep(minutes, "tt", (time.perf_counter() - t0) / 60)
                torch.set_num_threads(1)
            keep(runs, "tt", tt_run)
            keep(evals, "tt", evaluate_and_save(tt_run, eval_kw, args))
            # the model's own candidates, scored by the critic (TT + Q without --prior)
            own = evaluate_and_save(tt_run, eval_kw, args, critic=iql_run)
            if args.ttq_candidates == "iql":  # IQL's actor proposes: the measured best
                ttq = evaluate_and_save(tt_run, eval_kw, args, critic=iql_run, prior=iql_run)
            else:
                ttq = own
            for key, ev in (("tt", evals["tt"][-1]), ("ttq", ttq)):  # also when read back
                eval_min[key].append(ev["wall_s"] / 60)
            keep(evals, "ttq", ttq)
            keep(evals, "ttq_own", own)
            noise = read_manifest(tt_run)[0].plan.prior_noise  # the search's candidates' noise
            # does the critic's pick beat a random pick of the same candidates? Q(s, a) of
            # each of IQL's candidates (V(s) would tie them all), and IQL with that noise
            keep(evals, "critic_h1", evaluate_and_save(
                tt_run, eval_kw, args, critic=iql_run, prior=iql_run, horizon=1
            ))  # fmt: skip
            keep(evals, "iql_noisy", evaluate_and_save(iql_run, eval_kw, args, action_noise=noise))
            if args.prior:
                wbc_run = runs["wbc"][-1]
                keep(evals, "tt_prior", evaluate_and_save(tt_run, eval_kw, args, prior=wbc_run))
                keep(evals, "wbc_noisy", evaluate_and_save(
                    wbc_run, eval_kw, args, action_noise=noise
                ))  # fmt: skip
    except TrajplanError as exc:  # one line on stderr, never wrapped to the terminal's width
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {exc}", highlight=False)
        return 2

    seeded = args.seeds is not None
    own_is_ttq = args.ttq_candidates == "model"
    labels = {  # short: the table stays readable at 80 columns (notes below it)
        "bc": "BC",
        "wbc": "wBC",
        "iql": "IQL",
        "tt": "TT",
        "ttq": "TT + Q (IQL's Q)",
        "ttq_own": "TT + Q, own candidates" + (" (= TT + Q)" if own_is_ttq else ""),
        "critic_h1": "critic alone (h1)",
        "iql_noisy": "IQL + the prior's noise",
        "tt_prior": "TT, wBC as prior",
        "wbc_noisy": "wBC + the prior's noise",
    }
    rows = [k for k in labels if k in evals]
    goal = any(e.get("success_rate") is not None for k in rows for e in evals[k])

    def mean_of(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    def row_mean(key: str, field: str = "score_mean") -> float | None:
        """A row's figure averaged over its training seeds (each seed counts the same)."""
        vals = [e.get(field) for e in evals[key]]
        return None if any(v is None for v in vals) else float(np.mean(vals))

    stats: dict[str, dict] = {}
    if seeded:
        for key in rows:
            per_seed = [e["scores"] for e in evals[key]]
            if all(x is not None for sc in per_seed for x in sc):  # else no reference scores
                stats[key] = seeded_stats(per_seed)
    comparisons = [
        ("ttq_own", "iql"), ("ttq_own", "wbc"), ("ttq_own", "critic_h1"), ("tt", "wbc"),
        ("ttq", "iql"), ("critic_h1", "iql_noisy"), ("tt_prior", "wbc_noisy"),
    ]  # fmt: skip
    if args.ttq_candidates == "model":  # ttq is ttq_own
        comparisons.remove(("ttq", "iql"))
    paired: dict[tuple[str, str], dict] = {}
    if seeded:
        for a, b in comparisons:
            if a in stats and b in stats:
                paired[(a, b)] = paired_stats(evals[a], evals[b])

    def cell(mean: float | None, err: float | None) -> str:
        return "-" if mean is None else f"{mean:.1f}" + ("" if err is None else f" ± {err:.1f}")

    first, last = seeds[0], seeds[-1]
    if seeded:
        title = (
            f"{args.dataset}: training seeds {args.seeds}, {args.episodes} episodes each "
            f"(episode seeds {first}..{last})"
        )
        columns = ["", "mean", "IQM [95% CI]", "per seed",
                   *(["success"] if goal else []), "train min"]  # fmt: skip
    else:
        title = f"{args.dataset}: {args.episodes} episodes, seeds {first}..{last}"
        columns = ["", "normalized score", "return", *(["success"] if goal else []), "train min"]
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if not col else "right")
    table.add_row(f"dataset ({ds_n} episodes)", cell(ds_mean, ds_err), *[""] * (len(columns) - 2))
    for key in rows:
        rate = row_mean(key, "success_rate")
        success = [("-" if rate is None else f"{rate:.2f}")] if goal else []
        train_min = mean_of(minutes.get(key, []))
        train_cell = "-" if train_min is None else f"{train_min:.1f}"
        if seeded:
            st = stats.get(key)
            per_seed = ", ".join(
                "-" if e["score_mean"] is None else f"{e['score_mean']:.1f}" for e in evals[key]
            )
            table.add_row(
                labels[key],
                cell(row_mean(key), None),
                "-" if st is None else f"{st['iqm']:.1f} [{st['ci_low']:.1f}, {st['ci_high']:.1f}]",
                per_seed,
                *success,
                train_cell,
            )
        else:
            (e,) = evals[key]
            table.add_row(
                labels[key],
                cell(e["score_mean"], e["score_stderr"]),
                cell(e["return_mean"], e["return_stderr"]),
                *success,
                train_cell,
            )
    console.print(table)

    def note(text: str) -> None:  # one line, however narrow the terminal
        console.print(text, highlight=False, soft_wrap=True)

    if seeded:
        note(
            f"IQM of all episodes of the {len(train_seeds)} training seeds (aggregate.py), "
            "95% bootstrap CI over seeds and episodes (seeds with replacement, then each "
            "drawn seed's episodes); mean: of the per-seed means; train min: per seed"
        )
    note(
        "own candidates: TT + Q over the model's samples; critic alone (h1): Q of IQL's "
        "candidates at horizon 1; IQL + the prior's noise: the same candidates at random; "
        "TT, wBC as prior: the search over wBC's actions plus the prior's noise; wBC + "
        "the prior's noise: those candidates at random"
    )
    if paired:
        pt = Table(
            title="paired differences a - b (the rows' JSON keys): same training seed and "
            "episodes, mean over seeds, 95% bootstrap CI over seeds and episodes"
        )
        for col in ("", "mean difference", "95% CI", "seeds a > b", "seeds a < b"):
            pt.add_column(col, justify="left" if not col else "right")
        for (a, b), d in paired.items():
            pt.add_row(
                f"{a} - {b}",
                f"{d['mean']:+.1f}",
                f"[{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]",
                str(d["seeds_above"]),
                str(d["seeds_below"]),
            )
        console.print(pt)
    console.print(f"reference scores: {ref}", highlight=False)
    which = "IQL's actor (--prior IQL)" if args.ttq_candidates == "iql" else "the model's"
    console.print(f"TT + Q's candidate actions: {which}", highlight=False)
    if ds_note:
        console.print(f"dataset: {ds_note} (no score)", highlight=False)
    diags = [e.get("diagnostics") or {} for e in evals["tt"]]
    diag = {
        k: mean_of([d.get(k) for d in diags])
        for k in ("reward_corr", "return_bias", "return_pred_mean", "return_realized_mean")
    }
    if any(v is not None for v in diag.values()):

        def num(key: str) -> float:  # None (e.g. a constant reward): nan
            x = diag.get(key)
            return float("nan") if x is None else float(x)

        console.print(
            f"TT diagnostics{' (mean over seeds)' if seeded else ''}: "
            f"reward corr {num('reward_corr'):.3f}, "
            f"return bias {num('return_bias'):.1f} "
            f"(predicted {num('return_pred_mean'):.1f} vs realized "
            f"{num('return_realized_mean'):.1f})",
            highlight=False,
        )

    def stderr_of(key: str) -> float:
        """A row's stderr: over its episodes (one run), else over the per-seed means."""
        if not seeded:
            return round(evals[key][0]["score_stderr"] or 0.0, 2)
        from trajplan.evaluation.scores import stderr

        means = [e["score_mean"] for e in evals[key]]
        if any(m is None for m in means):
            return 0.0
        return round(stderr(np.asarray(means, np.float64)) or 0.0, 2)

    tt, bc, iql = row_mean("tt"), row_mean("bc"), row_mean("iql")
    for key in rows:
        figures[f"{key}_normalized"] = rounded(row_mean(key))
        figures[f"{key}_stderr"] = stderr_of(key)
    figures.update(
        dataset_normalized=rounded(ds_mean),
        dataset_stderr=rounded(ds_err),
        tt_minus_bc=minus(tt, bc),
        tt_minus_dataset=minus(tt, ds_mean),
        tt_train_min=rounded(mean_of(minutes["tt"]), 1),
        bc_train_min=rounded(mean_of(minutes["bc"]), 1),
        tt_eval_min=round(float(np.mean(eval_min["tt"])), 1),
        tt_ms_per_step=round(float(np.mean([e["ms_per_step"] for e in evals["tt"]])), 3),
        comparable=all(e["comparable"] for e in evals["tt"]),
        reference=ref,
        tt_reward_corr=diag["reward_corr"],
        tt_return_bias=diag["return_bias"],
        iql_minus_bc=minus(iql, bc),
        iql_train_min=rounded(mean_of(minutes["iql"]), 1),
        iql_steps=json.loads((runs["iql"][0] / "config.json").read_text())["config"]["steps"],
        ttq_minus_tt=minus(row_mean("ttq"), tt),
        ttq_minus_iql=minus(row_mean("ttq"), iql),
        ttq_own_minus_iql=minus(row_mean("ttq_own"), iql),
        ttq_eval_min=round(float(np.mean(eval_min["ttq"])), 1),
        ttq_ms_per_step=round(float(np.mean([e["ms_per_step"] for e in evals["ttq"]])), 3),
        ttq_candidates=args.ttq_candidates,
        # what the critic's pick adds over a random pick of the same candidates
        critic_h1_minus_iql_noisy=minus(row_mean("critic_h1"), row_mean("iql_noisy")),
    )
    for key in ("tt", "bc", "wbc", "iql"):
        paths = [str(r) for r in runs[key]]
        if seeded:
            figures[f"{key}_runs"] = paths
        else:
            figures[f"{key}_run"] = paths[0]
    if seeded:
        figures["training_seeds"] = train_seeds
    if ds_note:
        figures["dataset_note"] = ds_note
    if args.prior:
        ttp = row_mean("tt_prior")
        shares = [(e.get("diagnostics") or {}).get("prior_action_share") for e in evals["tt_prior"]]
        figures.update(
            tt_prior_minus_bc=minus(ttp, bc),
            tt_prior_minus_wbc=minus(ttp, row_mean("wbc")),
            tt_prior_minus_dataset=minus(ttp, ds_mean),
            tt_prior_action_share=mean_of(shares),
            tt_prior_minus_wbc_noisy=minus(ttp, row_mean("wbc_noisy")),
        )
    for key in rows:  # goal tasks: the share of episodes that reached the goal
        rate = row_mean(key, "success_rate")
        if rate is not None:
            figures[f"{key}_success"] = round(rate, 3)
    for key, st in stats.items():  # over seeds: IQM and its CI (over seeds and episodes)
        figures[f"{key}_iqm"] = rounded(st["iqm"])
        figures[f"{key}_ci_low"] = rounded(st["ci_low"])
        figures[f"{key}_ci_high"] = rounded(st["ci_high"])
    for (a, b), d in paired.items():  # paired by training seed and episode
        name = f"{a}_minus_{b}"
        figures[f"{name}_mean"] = rounded(d["mean"])
        figures[f"{name}_ci_low"] = rounded(d["ci_low"])
        figures[f"{name}_ci_high"] = rounded(d["ci_high"])
        figures[f"{name}_seeds_above"] = d["seeds_above"]
        figures[f"{name}_seeds_below"] = d["seeds_below"]
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
