"""How does TT's score grow with training? Train one config for several budgets (in epochs of
the dataset), each a finished schedule, evaluate every run on the same episode seeds, and
plot the score against the training tokens, with the paper's budget marked.

The data and the critic (TT + Q) first, once (README.md, Data; docs/usage.md, Mazes):

    trajplan data collect --env pointmaze-umaze --policy waypoint --steps 1000000
    trajplan iql --dataset local/pointmaze/umaze-v0 --steps 50000 --out runs/pm-iql
    trajplan data collect --env hopper --policy medium --steps 100000 \\
        --mix-random 0:0.5 --noise 0:0.5 --dataset-id local/hopper/mixed-v0
    trajplan iql --dataset local/hopper/mixed-v0 --steps 50000 --out runs/hopper-iql

CPU (2 cores): PointMaze umaze at small budgets. One epoch of its 1M steps is about 14,700
optimizer steps of the recipe's batch of 64, and the umaze TT trained 8,000 steps in 15-25
minutes on one busy thread (docs/results.md): 0.1,0.2,0.5,1 (1.8 epochs) is about 1-1.5
hours of training, plus two evaluations per run (10 episodes of 300 steps, about 0.1-0.2 s
a step on one core):

    python scripts/bench_scaling.py --dataset local/pointmaze/umaze-v0 \\
        --config pointmaze-umaze --epochs 0.1,0.2,0.5,1 --critic runs/pm-iql \\
        --episodes 10 --workers 2 --threads 1 --out runs/scaling-umaze

GPU (training on the card; the evaluations over --workers processes, sharing it): the
issue's range on both datasets, over three training seeds (Hopper mixed's 0.5-8 epochs are
22,900 steps, about 4 hours on one CPU thread at the recipe's 2,950 steps in 30 minutes):

    python scripts/bench_scaling.py --dataset local/pointmaze/umaze-v0 \\
        --config pointmaze-umaze --epochs 0.5,1,2,4,8 --seeds 0-2 --critic runs/pm-iql \\
        --episodes 10 --device cuda --out runs/scaling-umaze
    python scripts/bench_scaling.py --dataset local/hopper/mixed-v0 --config cpu-recipe \\
        --epochs 0.5,1,2,4,8 --seeds 0-2 --critic runs/hopper-iql \\
        --episodes 10 --device cuda --out runs/scaling-hopper

Each budget B of --epochs is one run per training seed, OUT/e<B>/seed<S> (without --seeds,
the config's own train.seed): the config trained for round(B * steps_per_epoch) optimizer
steps (train.max_steps, train.epochs = ceil(B)) with train.fit_schedule, so the learning
rate's warmup and cosine span exactly that run and end at its floor at its last step,
whatever B is (one rule for fractional and whole budgets; a config's own epochs, max_steps
and time limit are replaced). steps_per_epoch = ceil(training windows / batch size).

Run it again with the same --out and it goes on where it stopped: a budget whose run is
finished is reused (not retrained), an interrupted one is resumed from its last checkpoint,
one stopped before its first checkpoint is retrained; each run says which. Evaluations
already saved next to a run (same episodes, same plan) are reused too. A run of the same
folder with other settings or another number of steps is refused before anything trains.

Every run is evaluated with TT's own search (the config's plan) and, with --critic IQL_RUN,
as TT + Q over the model's own candidates (`trajplan eval RUN --critic IQL_RUN`, no
prior: the critic's Q scores the beams), all on episode seeds --seed .. --seed+episodes-1;
each evaluation is written to RUN/eval/ as `trajplan eval` writes it. With --seeds the
critic may name each seed's IQL run with {seed} in its path.

Output: a table (budget in epochs, steps, tokens trained, training minutes, TT's normalized
score as mean +- stderr over episodes, or with several seeds the IQM of all episodes with
its 95% bootstrap CI over seeds and episodes (trajplan/evaluation/aggregate.py), success
where the env reports it, TT + Q likewise), OUT/scaling.csv (one row per budget),
OUT/scaling.png (score against tokens, log x, the paper's budget as a vertical line) and
as the last line one JSON object of the figures: per budget `steps_by_epochs`,
`tokens_by_epochs`, `train_minutes_by_epochs`, `tt_normalized_by_epochs`,
`tt_stderr_by_epochs` (`tt_iqm_by_epochs`, `tt_ci_low_by_epochs`, `tt_ci_high_by_epochs`
with several seeds; `tt_success_by_epochs` on goal tasks), the same for `ttq_own_` with
--critic, and `steps_per_epoch`, `tokens_per_epoch`, `paper_epochs`, `paper_tokens`.
Tokens are the schedule's unit: non-stop target tokens, as config.json's `tokens` counts
them; training minutes are config.json's `wall_s` (all sessions of a resumed run).
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import importlib.util
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent

# The paper's budget (../shared/SPEC.md, section 4, "Epochs"): the published TT trains
# n_epochs = int(1e6 / n_windows * n_epochs_ref) epochs, n_epochs_ref = 50 (80 for hopper
# and walker2d medium-replay): 50 epochs of D4RL's 1M-step datasets, the same number of
# windows drawn on a smaller one. trajplan.training.optim.n_epochs_for computes it.
PAPER_EPOCHS_REF = 50
PAPER_EPOCHS_REF_MEDIUM_REPLAY = 80  # hopper and walker2d medium-replay


def bench_learning() -> Any:
    """scripts/bench_learning.py as a module: its evaluate_and_save, seeded_stats, ..."""
    spec = importlib.util.spec_from_file_location("bench_learning", HERE / "bench_learning.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_budgets(text: str) -> list[float]:
    """ "0.5,1,2" -> [0.5, 1.0, 2.0]: positive finite numbers of epochs, distinct, sorted."""
    from trajplan.errors import TrajplanError

    bad = TrajplanError(f"--epochs takes positive numbers of epochs like 0.5,1,2,4,8, got {text!r}")
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise bad from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise bad
    budgets = sorted(set(values))
    if len({label(b) for b in budgets}) < len(budgets):  # one folder per budget: e<label>
        raise TrajplanError(f"--epochs {text!r}: budgets closer than 6 digits tell apart")
    return budgets


def label(budget: float) -> str:
    """A budget as the table, the folders and the JSON name it: 0.5, 1, 8."""
    return f"{budget:g}"


def paper_epochs(dataset_id: str, env: str | None, n_windows: int) -> int:
    """The paper's number of epochs on this dataset (SPEC.md, section 4, "Epochs")."""
    from trajplan.config import TrainConfig
    from trajplan.training.optim import n_epochs_for

    replay = "medium-replay" in dataset_id and env in ("hopper", "walker2d")
    ref = PAPER_EPOCHS_REF_MEDIUM_REPLAY if replay else PAPER_EPOCHS_REF
    return n_epochs_for(TrainConfig(n_epochs_ref=ref), n_windows)


def budget_config(base: Any, steps: int, budget: float, seed: int) -> Any:
    """The config of one budget's run: `steps` optimizer steps, the schedule fitted to them."""
    from trajplan.training.seeds import with_seed

    cfg = with_seed(copy.deepcopy(base), seed)
    cfg.train = dataclasses.replace(
        cfg.train,
        epochs=max(1, math.ceil(budget)),
        max_steps=steps,
        fit_schedule=True,  # warmup and cosine span this run, whatever its length
        clamp_schedule=True,
        time_limit_s=None,  # a run stopped by the clock would not be this budget
    )
    return cfg


def run_state(run_dir: Path, cfg: Any, steps: int) -> tuple[str, str]:
    """What to do with one budget's run folder: ("train" | "resume" | "reuse", what it says).
    A folder holding a run of other settings or another length: one TrajplanError."""
    from trajplan.errors import TrajplanError
    from trajplan.runs.checkpoint import has_checkpoint, is_dead_end, read_manifest
    from trajplan.training.prepare import resume_config

    if not run_dir.exists():
        return "train", "trained"
    if is_dead_end(run_dir):  # killed before its first checkpoint: nothing to lose
        empty = not any(run_dir.iterdir())
        return "train", "trained" if empty else "retrained (stopped before its first checkpoint)"
    saved, doc = read_manifest(run_dir)
    try:
        resume_config(saved, cfg, run_dir)
    except TrajplanError as exc:
        raise TrajplanError(
            f"{exc}: use another --out, or the settings it was trained with"
        ) from None
    total = doc.get("total_steps")
    if total != steps:
        raise TrajplanError(
            f"{run_dir} holds a run of {total} steps, this budget is {steps} steps: "
            "use another --out, or move that run away"
        )
    step, status = doc.get("step"), doc.get("status")
    if status == "finished" and step == steps:
        return "reuse", f"reused (finished, {steps:,} steps)"
    if not has_checkpoint(run_dir):
        return "train", "retrained (stopped before its first checkpoint)"
    return "resume", f"resumed from step {step:,} of {steps:,} ({status})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", required=True, help="Minari dataset id")
    ap.add_argument("--config", default="cpu-recipe", help="a shipped config's name or a YAML file")
    ap.add_argument("--set", action="append", default=[], help="config override a.b=v")
    ap.add_argument(
        "--epochs",
        default="0.5,1,2,4,8",
        help="training budgets in epochs of the dataset, e.g. 0.5,1,2,4,8 (the default): one "
        "run per budget (and seed), each a finished schedule of round(B * steps per epoch) "
        "steps",
    )
    ap.add_argument(
        "--seeds",
        default=None,
        help="training seeds, e.g. 0-2 or 0,1,2: every budget trained once per seed, IQM "
        "with a 95%% bootstrap CI over seeds and episodes (default: the config's train.seed)",
    )
    ap.add_argument(
        "--critic",
        default=None,
        help="an IQL run (`trajplan iql`): also evaluate TT + Q over the model's own "
        "candidates (with --seeds, {seed} in the path names each seed's run)",
    )
    ap.add_argument("--episodes", type=int, default=10, help="evaluation episodes per run")
    ap.add_argument("--seed", type=int, default=0, help="first evaluation (episode) seed")
    ap.add_argument("--episode-steps", type=int, default=None, help="cap (not comparable)")
    ap.add_argument("--workers", type=int, default=None, help="eval processes (default: cores)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="training threads on a CPU (default 1, fastest for the recipe's small model)",
    )
    ap.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda or auto (default: a GPU if there is one), training and evaluation",
    )
    ap.add_argument(
        "--out", default=None, help="folder for the runs (default runs/scaling/<dataset>-<time>)"
    )
    args = ap.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table

    from trajplan.baselines.iql import dataset_env
    from trajplan.configs import apply_overrides, load_config
    from trajplan.data.transitions import prepare
    from trajplan.errors import TrajplanError
    from trajplan.evaluation.workers import default_workers
    from trajplan.runs import load_critic
    from trajplan.runtime import Stopped, atomic_write, check_writable, resolve_device
    from trajplan.training.loop import train
    from trajplan.training.prepare import resolve_dataset
    from trajplan.training.seeds import parse_seeds, seed_dir
    from trajplan.training.steps import Batches, target_token_counts

    bench = bench_learning()
    console = Console()

    def say(text: str) -> None:  # one line, however narrow the terminal
        console.print(text, highlight=False, soft_wrap=True)

    # -- everything checked before any training ------------------------------------------------
    try:
        budgets = parse_budgets(args.epochs)
        if args.episodes < 1:
            raise TrajplanError(f"--episodes must be at least 1, got {args.episodes}")
        if args.threads is not None and args.threads < 1:
            raise TrajplanError(f"--threads must be at least 1, got {args.threads}")
        if args.workers is not None and args.workers < 1:
            raise TrajplanError(f"--workers must be at least 1, got {args.workers}")
        resolve_device(args.device)  # cuda where there is none: one line now
        info = dataset_env(args.dataset)  # an unknown dataset: one line
        base = load_config(args.config)
        base.dataset = args.dataset
        apply_overrides(base, args.set)
        train_seeds = [base.train.seed] if args.seeds is None else parse_seeds(args.seeds)
        critics: dict[int, Path | None] = {}
        for s in train_seeds:
            critics[s] = None
            if args.critic is not None:
                critics[s] = Path(args.critic.replace("{seed}", str(s)))
                load_critic(critics[s], info.name)  # an IQL run that fits this env
        slug = re.sub(r"[^A-Za-z0-9]+", "-", args.dataset).strip("-")
        out = Path(args.out or f"runs/scaling/{slug}-{time.strftime('%Y%m%d-%H%M%S')}")
        # the windows every run trains on (tokenized once, shared by the runs)
        _, _, obs_keep = resolve_dataset(base)
        data = prepare(args.dataset, base.data, obs_keep=obs_keep)
        n_windows = data.windows.n_windows
        steps_per_epoch = Batches.plan(n_windows, base.train.batch_size, 1).steps_per_epoch
        tokens_per_epoch = int(target_token_counts(data.windows).sum())
        steps = {b: round(b * steps_per_epoch) for b in budgets}
        for b, n in steps.items():
            if n < 1:
                raise TrajplanError(
                    f"--epochs {label(b)} is {b * steps_per_epoch:.2g} steps of this dataset's "
                    f"{steps_per_epoch:,} per epoch: give at least {1 / steps_per_epoch:.2g}"
                )
        jobs = []  # (budget, seed, run folder, config, action, what it says)
        for b in budgets:
            for s in train_seeds:
                run_dir = seed_dir(out / f"e{label(b)}", s)
                cfg = budget_config(base, steps[b], b, s)
                jobs.append((b, s, run_dir, cfg, *run_state(run_dir, cfg, steps[b])))
        check_writable(out)
    except TrajplanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    paper = paper_epochs(args.dataset, info.name, n_windows)
    seeds = list(range(args.seed, args.seed + args.episodes))
    workers = args.workers or default_workers()
    eval_kw = dict(
        seeds=seeds, episode_steps=args.episode_steps, workers=workers, device=args.device
    )
    say(
        f"{args.dataset}, config {args.config}: {n_windows:,} training windows, "
        f"{steps_per_epoch:,} steps ({tokens_per_epoch:,} tokens) per epoch; "
        f"budgets {', '.join(f'{label(b)} ({steps[b]:,} steps)' for b in budgets)}"
    )

    # -- train (or resume, or reuse) and evaluate every run ------------------------------------
    runs: dict[float, list[Path]] = {b: [] for b in budgets}
    actions: dict[float, list[str]] = {b: [] for b in budgets}
    docs: dict[float, list[dict]] = {b: [] for b in budgets}
    evals: dict[str, dict[float, list[dict]]] = {"tt": {}, "ttq_own": {}}
    try:
        for b, s, run_dir, cfg, action, words in jobs:
            where = f"e{label(b)}/seed{s}"
            actions[b].append(words)  # what became of the run: trained, resumed, reused
            if action != "reuse":
                going = "resuming" if action == "resume" else "training"
                say(f"{where}: {going}, {steps[b]:,} steps ...")
                torch.set_num_threads(args.threads or 1)  # the small model: 1 is fastest
                t0 = time.perf_counter()
                train(cfg, run_dir, resume=action == "resume", device=args.device,
                      progress=False, data=data)  # fmt: skip
                torch.set_num_threads(1)  # planning: one thread per process is fastest
                words += f" in {(time.perf_counter() - t0) / 60:.1f} min"
            doc = json.loads((run_dir / "config.json").read_text())
            if doc.get("status") != "finished" or doc.get("step") != steps[b]:  # a safeguard
                raise TrajplanError(
                    f"{run_dir}: {doc.get('status')} at step {doc.get('step')}, not "
                    f"finished at {steps[b]}"
                )
            runs[b].append(run_dir)
            docs[b].append(doc)
            torch.set_num_threads(1)
            for row, critic in (("tt", None), ("ttq_own", critics[s])):
                if row == "ttq_own" and critic is None:
                    continue
                ev = bench.evaluate_and_save(run_dir, eval_kw, args, critic=critic)
                if ev.get("reused"):  # saved by an earlier call (bench_learning.saved_eval)
                    words += f"; {row} evaluation reused"
                evals[row].setdefault(b, []).append(ev)
            say(f"{where}: {words}")
    except Stopped as stop:
        say(f"stopped: what was done is saved; run the same command again to go on (--out {out})")
        return stop.exit_code
    except TrajplanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # -- figures ---------------------------------------------------------------------------
    seeded = len(train_seeds) > 1
    rows = [r for r in ("tt", "ttq_own") if evals[r]]
    goal = any(e.get("success_rate") is not None for r in rows for b in budgets
               for e in evals[r][b])  # fmt: skip
    from trajplan.evaluation.scores import stderr

    def mean_of(values: list) -> float | None:
        return None if not values or any(v is None for v in values) else float(np.mean(values))

    by: dict[str, dict[str, Any]] = {}  # figure -> {budget label: value}

    def put(name: str, b: float, value: Any) -> None:
        by.setdefault(name, {})[label(b)] = value

    for b in budgets:
        put("steps", b, steps[b])
        put("tokens", b, round(float(np.mean([d["tokens"] for d in docs[b]]))))
        put("train_minutes", b, round(float(np.mean([d["wall_s"] for d in docs[b]])) / 60, 2))
        for r in rows:
            es = evals[r][b]
            means = [e["score_mean"] for e in es]
            put(f"{r}_normalized", b, bench.rounded(mean_of(means)))
            if seeded:  # over the per-seed means; the IQM and its CI over seeds and episodes
                ok = all(m is not None for m in means)
                err = stderr(np.asarray(means, np.float64)) if ok else None
                st = bench.seeded_stats([e["scores"] for e in es]) if ok else {}
                put(f"{r}_stderr", b, bench.rounded(err))
                for k in ("iqm", "ci_low", "ci_high"):
                    put(f"{r}_{k}", b, bench.rounded(st.get(k)))
            else:
                put(f"{r}_stderr", b, bench.rounded(es[0]["score_stderr"]))
            if goal:
                rate = mean_of([e.get("success_rate") for e in es])
                put(f"{r}_success", b, None if rate is None else round(rate, 3))

    first = evals["tt"][budgets[0]][0]
    reference = first.get("reference")
    comparable = all(e.get("comparable") for r in rows for b in budgets for e in evals[r][b])
    paper_tokens = paper * tokens_per_epoch

    # -- table -----------------------------------------------------------------------------
    def score_cell(r: str, b: float) -> str:
        key = label(b)
        mean = by[f"{r}_normalized"][key]
        if mean is None:
            return "-"
        if seeded:
            iqm, lo, hi = (by[f"{r}_{k}"][key] for k in ("iqm", "ci_low", "ci_high"))
            return f"{iqm:.1f} [{lo:.1f}, {hi:.1f}]"
        err = by[f"{r}_stderr"][key]
        return f"{mean:.1f}" + ("" if err is None else f" ± {err:.1f}")

    names = {"tt": "TT", "ttq_own": "TT + Q own"}
    what = "IQM [95% CI]" if seeded else "mean ± stderr"
    table = Table(
        title=f"{args.dataset} ({args.config}): TT against training; {args.episodes} episodes "
        f"(seeds {seeds[0]}..{seeds[-1]})"
        + (f", training seeds {args.seeds}" if seeded else f", training seed {train_seeds[0]}")
    )
    columns = ["epochs", "steps", "tokens", "train min"]
    for r in rows:
        columns.append(f"{names[r]} {what}")
        if goal:
            columns.append(f"{names[r]} success")
    for col in columns:
        table.add_column(col, justify="right")
    for b in budgets:
        key = label(b)
        cells = [key, f"{steps[b]:,}", f"{by['tokens'][key]:,}", f"{by['train_minutes'][key]:.1f}"]
        for r in rows:
            cells.append(score_cell(r, b))
            if goal:
                rate = by[f"{r}_success"][key]
                cells.append("-" if rate is None else f"{rate:.2f}")
        table.add_row(*cells)
    console.print(table)
    say(
        f"the paper's budget: {paper:,} epochs of this dataset ({paper_tokens:,} tokens): "
        f"int(1e6 / {n_windows:,} windows x {PAPER_EPOCHS_REF}), SPEC.md section 4 (50 "
        "epochs of D4RL's 1M-step datasets)"
    )
    say(f"normalized scores: {reference}" + ("" if comparable else "; capped: not comparable"))
    if "ttq_own" in rows:
        say(f"TT + Q own: the model's own candidates, scored by the critic {args.critic}")

    # -- CSV and figure --------------------------------------------------------------------
    keys = list(by)  # CSV columns: epochs, then every per-budget figure (JSON: <key>_by_epochs)
    csv_path = out / "scaling.csv"

    def write_csv(path: Path) -> None:
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epochs", *keys])
            for b in budgets:
                w.writerow([label(b), *("" if by[k][label(b)] is None else by[k][label(b)]
                                        for k in keys)])  # fmt: skip

    atomic_write(csv_path, write_csv)
    png_path = plot(out / "scaling.png", by, budgets, rows, goal, seeded, paper_tokens,
                    tokens_per_epoch, title=f"{args.dataset} ({args.config})",
                    note=f"normalized: {reference}; {args.episodes} episodes per run"
                    + ("" if comparable else "; capped episodes: not comparable"))  # fmt: skip
    say(f"table: {csv_path}; figure: {png_path}")

    figures: dict[str, Any] = {
        "dataset_id": args.dataset,
        "config": args.config,
        "episodes": args.episodes,
        "training_seeds": train_seeds,
        "epochs": [float(b) for b in budgets],
        "n_windows": n_windows,
        "steps_per_epoch": steps_per_epoch,
        "tokens_per_epoch": tokens_per_epoch,
        "paper_epochs": paper,
        "paper_tokens": paper_tokens,
        "reference": reference,
        "comparable": comparable,
        "critic": args.critic,
        **{f"{k}_by_epochs": v for k, v in by.items()},
        "runs_by_epochs": {label(b): [str(r) for r in runs[b]] for b in budgets},
        "trained_by_epochs": {label(b): actions[b] for b in budgets},
        "csv": str(csv_path),
        "png": str(png_path),
    }
    print(json.dumps(figures))
    return 0


def plot(
    path: Path,
    by: dict[str, dict[str, Any]],
    budgets: list[float],
    rows: list[str],
    goal: bool,
    seeded: bool,
    paper_tokens: int,
    tokens_per_epoch: int,
    title: str,
    note: str,
) -> Path:
    """Score (and success) against tokens trained, log x (epochs on the top axis), one
    line per row; the paper's budget as a dashed vertical line."""
    from trajplan.evaluation.plot import _pyplot, _save

    def values(name: str) -> np.ndarray:  # one figure per budget, None as nan
        return np.array([np.nan if v is None else v for v in by[name].values()], np.float64)

    plt = _pyplot()
    panels = 2 if goal else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.5), squeeze=False)
    styles = {"tt": ("TT", "tab:blue", "-o"),
              "ttq_own": ("TT + Q, own candidates", "tab:orange", "-s")}  # fmt: skip
    x = values("tokens")
    for ax, what in zip(axes[0], ["normalized", "success"][:panels], strict=True):
        for r in rows:
            name, colour, style = styles[r]
            y, err = values(f"{r}_{what}"), None
            if what == "normalized" and seeded:  # the IQM with its CI
                y = values(f"{r}_iqm")
                err = np.vstack([y - values(f"{r}_ci_low"), values(f"{r}_ci_high") - y])
            elif what == "normalized":
                err = values(f"{r}_stderr")
            ax.errorbar(x, y, yerr=err, fmt=style, color=colour, label=name, capsize=3)
        paper = f"paper's budget ({paper_tokens / tokens_per_epoch:,.0f} epochs)"
        ax.axvline(paper_tokens, color="k", ls="--", lw=1, label=paper)
        ax.set_xscale("log")
        ax.set_xlim(min(x.min(), paper_tokens) / 2, max(x.max(), paper_tokens) * 2)
        ax.set_xlabel("training tokens (non-stop targets)")
        if what == "normalized":
            ax.set_ylabel("normalized score, " + ("IQM [95% CI]" if seeded else "mean ± stderr"))
        else:
            ax.set_ylabel("success rate")
            ax.set_ylim(-0.05, 1.05)
        top = ax.secondary_xaxis("top", functions=(lambda t: t / tokens_per_epoch,
                                                   lambda e: e * tokens_per_epoch))  # fmt: skip
        top.set_xlabel("epochs of this dataset")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.text(0.01, -0.02, note, fontsize="small", va="top")
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
