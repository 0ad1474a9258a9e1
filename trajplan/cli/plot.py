"""`trajplan plot` (trajplan.evaluation.plot) and `trajplan aggregate`
(trajplan.evaluation.aggregate)."""

from __future__ import annotations

import typer

from trajplan.cli.options import console


def plot_cmd(
    paths: list[str] = typer.Argument(
        ..., help="Run directories (learning curves), or eval.json files with --scores."
    ),
    out: str = typer.Option(
        None, help="Figure file, .png or .svg (default: curves.png / scores.png)."
    ),
    x: str = typer.Option("step", help="Learning curves against 'step' or 'tokens' (seen)."),
    scores: bool = typer.Option(
        False,
        "--scores",
        help="Compare normalized scores (mean ± stderr) of eval.json files (or RUN/eval/).",
    ),
) -> None:
    """Plot learning curves of runs (TT and BC), or compare their evaluation scores.

    Examples:
      trajplan plot runs/tt-s0 runs/tt-s1 runs/bc-s0 --out curves.png
      trajplan plot --scores runs/*/eval/eval.json --out scores.svg
    """
    from trajplan.evaluation.evalfiles import plot_eval_scores
    from trajplan.evaluation.plot import plot_curves

    if scores:
        path = plot_eval_scores(paths, out or "scores.png")
    else:
        path = plot_curves(paths, out or "curves.png", x=x)
    console.print(f"wrote {path}", highlight=False)


def aggregate_cmd(
    evals: list[str] = typer.Argument(
        ...,
        help="eval.json files (or run directories holding eval/eval.json); LABEL=PATH puts a "
        "run in group LABEL (default: one group per policy and dataset).",
    ),
    json_out: str = typer.Option(None, "--json", help="Also write the aggregate as JSON."),
    reps: int = typer.Option(2000, help="Bootstrap samples."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
) -> None:
    """Aggregate runs over seeds: per-run scores, mean ± stderr, IQM with 95% bootstrap CIs.

    Example: trajplan aggregate runs/tt-s*/eval/eval.json runs/bc-s*/eval/eval.json --json agg.json
    """
    from trajplan.evaluation.aggregate import aggregate, tables, to_json

    groups = aggregate(evals, reps=reps, seed=seed)
    for table in tables(groups):
        console.print(table)
    if json_out:
        from trajplan.runtime import write_json

        console.print(f"wrote {write_json(json_out, to_json(groups, reps, seed))}", highlight=False)
