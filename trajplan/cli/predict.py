"""`trajplan predict` and `trajplan ensemble`: long-horizon prediction (trajplan.prediction)."""

from __future__ import annotations

import typer

from trajplan.cli.options import THREADS, TRAIN_THREADS, console, parse_hidden, set_threads


def predict_cmd(
    run: str = typer.Argument(..., help="A TT run directory (trajplan train)."),
    out: str = typer.Option(
        ..., help="Folder for predict.json, predict.png and predict.svg (files there replaced)."
    ),
    horizon: int = typer.Option(100, help="Steps rolled out open-loop from every start."),
    starts: int = typer.Option(50, help="Held-out start states (fewer if fewer exist)."),
    samples: int = typer.Option(8, help="Sampled rollouts per start (K)."),
    ensemble: str = typer.Option(
        None, help="An ensemble run (trajplan ensemble) to roll out the same way, on the same data."
    ),
    dataset: str = typer.Option(
        None,
        help="Take the starts from every episode of this dataset instead of the run's "
        "validation split (needed when the run trained with data.val_fraction 0).",
    ),
    seed: int = typer.Option(0, help="Seed of the starts and of every sampled token or draw."),
    weights: str = typer.Option("last", help="The TT run's weights: last, best or best-eval."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    threads: int = THREADS,
    progress: bool = typer.Option(True, help="Show progress (plain lines without a TTY)."),
) -> None:
    """Roll a TT model open-loop from held-out states on the data's own actions and compare
    with the simulator (the recorded next states): error per step and dimension group, and
    the log-likelihood of the true states under the sampled rollouts (the paper's Figure 3).

    The held-out states are the run's validation episodes (data.val_fraction, e.g. the
    cpu-recipe's 5%). The baseline: a PETS-style ensemble trained on the same episodes,

      trajplan ensemble --dataset local/hopper/medium-v0 --out runs/ens-hopper
      trajplan predict runs/tt-hopper --ensemble runs/ens-hopper --out predict/hopper
    """
    from trajplan.prediction.report import PredictSettings, check_out_dir, predict, write_report

    set_threads(threads)
    check_out_dir(out, horizon, ensemble is not None)
    settings = PredictSettings(horizon, starts, samples, seed, dataset, weights, device)
    report = predict(run, settings, ensemble, progress)
    paths = write_report(report, out)
    for line in error_lines(report):
        console.print(line, highlight=False)
    console.print(f"wrote {', '.join(str(p) for p in paths)}")


def error_lines(report: dict) -> list[str]:
    """The open-loop error of each model at steps 1, 10, 50, 100 and the last one (--horizon),
    those the rollouts reach: "step 10: tt mse 0.123, ensemble mse 0.456"."""
    models = {k: v for k, v in report["models"].items() if k != "simulator"}
    last = max((len(v["mse_all"]) for v in models.values()), default=0)
    lines = []
    for h in sorted({*(s for s in (1, 10, 50, 100) if s <= last), last} - {0}):
        shown = [f"{name} mse {v['mse_all'][h - 1]:.4g}" for name, v in models.items()
                 if h <= len(v["mse_all"])]  # fmt: skip
        lines.append(f"step {h}: {', '.join(shown)}")
    return lines


def ensemble_cmd(
    dataset: str = typer.Option(..., help="Minari dataset id, e.g. local/hopper/medium-v0."),
    out: str = typer.Option(..., help="Run directory to create (must not exist)."),
    env: str = typer.Option(None, help="Env (default: the one the dataset was recorded in)."),
    members: int = typer.Option(5, help="Ensemble members (each on its own bootstrap resample)."),
    hidden: str = typer.Option("200,200,200", help="Hidden layer sizes, comma-separated."),
    steps: int = typer.Option(10_000, help="Adam steps (each member: batch --batch-size)."),
    batch_size: int = typer.Option(256, help="Transitions per member and step."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    val_fraction: float = typer.Option(
        0.05,
        help="Episodes held out, as the TT run's data.val_fraction (same split): predict "
        "scores both on episodes neither trained on.",
    ),
    seed: int = typer.Option(0, help="Seed of init, bootstrap resamples and batches."),
    threads: int = TRAIN_THREADS,
    progress: bool = typer.Option(True, help="Show progress (plain lines without a TTY)."),
) -> None:
    """Train the baseline of `trajplan predict`: a PETS-style probabilistic ensemble of MLPs,
    each predicting the mean and log-variance of the next state's change and the reward.

    About 0.05-0.2 s a step on one CPU thread (more when other jobs share the cores):
    --steps 3000 for a first look. Then:
    trajplan predict RUN_TT --ensemble OUT --out DIR
    """
    from trajplan.prediction.ensemble import train_ensemble
    from trajplan.runs.ensemble import EnsembleConfig

    set_threads(threads)
    sizes = parse_hidden(hidden)
    cfg = EnsembleConfig(
        members=members,
        hidden=sizes,
        lr=lr,
        batch_size=batch_size,
        steps=steps,
        val_fraction=val_fraction,
        seed=seed,
    )
    path = train_ensemble(dataset, out, cfg, env=env, progress=progress)
    console.print(f"wrote ensemble run [bold]{path}[/]")
