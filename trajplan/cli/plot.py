"""`trajplan plot` (trajplan.evaluation.plot) and `trajplan aggregate`
(trajplan.evaluation.aggregate)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from trajplan.cli.options import console, seed_option

if TYPE_CHECKING:
    from trajplan.evaluation.selection import Selection


def plot_cmd(
    paths: list[str] = typer.Argument(
        ...,
        help="Run directories (learning curves); with --scores: eval.json files, eval folders "
        "or run directories (one eval per run, the rule printed).",
    ),
    out: str = typer.Option(
        None, help="Figure file, .png or .svg (default: curves.png / scores.png)."
    ),
    x: str = typer.Option("step", help="Learning curves against 'step' or 'tokens' (seen)."),
    scores: bool = typer.Option(
        False,
        "--scores",
        help="Compare normalized scores (mean ± stderr) of runs' evaluations: one bar per run, "
        "its newest comparable eval; the others are listed as left out.",
    ),
) -> None:
    """Plot learning curves of runs (TT and BC), or compare their evaluation scores.

    Examples:
      trajplan plot runs/tt-s0 runs/tt-s1 runs/bc-s0 --out curves.png
      trajplan plot --scores runs/tt/seed* runs/bc --out scores.svg
    """
    from trajplan.evaluation.plot import plot_curves
    from trajplan.evaluation.selection import plot_eval_scores

    if scores:
        path, selection = plot_eval_scores(paths, out or "scores.png")
        print_selection(selection)
    else:
        path = plot_curves(paths, out or "curves.png", x=x)
    console.print(f"wrote {path}", highlight=False)


def print_selection(selection: Selection) -> None:
    """The rule that picked one eval per run, and every eval it left out with the reason."""
    console.print(f"[dim]{selection.rule}[/]", highlight=False)
    if selection.left_out:
        console.print(f"left out {len(selection.left_out)} eval(s):", highlight=False)
        for path, reason in selection.left_out:
            console.print(f"  {path}: {reason}", highlight=False, soft_wrap=True)


def aggregate_cmd(
    evals: list[str] = typer.Argument(
        ...,
        help="eval.json files, eval folders (RUN/eval) or run directories; one eval per run "
        "counts (its newest comparable one; the rule and what is left out are printed). "
        "LABEL=PATH puts a run in group LABEL (default: one group per policy and dataset).",
    ),
    json_out: str = typer.Option(None, "--json", help="Also write the aggregate as JSON."),
    reps: int = typer.Option(2000, help="Bootstrap samples."),
    seed: int = seed_option(0, "Seed of the bootstrap."),
) -> None:
    """Aggregate runs over seeds: per-run scores, mean ± stderr, IQM with 95% bootstrap CIs.

    Example: trajplan aggregate runs/tt/seed*/eval runs/bc/seed*/eval --json agg.json
    """
    from trajplan.evaluation.aggregate import aggregate_evals, tables, to_json
    from trajplan.runtime import check_out_file, write_json

    if json_out:
        check_out_file(json_out, "--json file")  # before the bootstrap, not after
    groups, selection = aggregate_evals(evals, reps=reps, seed=seed)
    print_selection(selection)
    for table in tables(groups):
        console.print(table)
    if json_out:
        doc = to_json(groups, reps, seed, selection=selection)
        console.print(f"wrote {write_json(json_out, doc)}", highlight=False)
