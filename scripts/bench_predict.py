"""Benchmark long-horizon prediction: TT vs the PETS-style ensemble, open-loop from held-out
states (`trajplan predict`), at steps 1 / 10 / 50 / 100.

Runs `trajplan.prediction.report.predict` on a TT run (and an ensemble run), writes the
report to --out, prints a table, and as the last line one JSON object of the figures:
`tt_mse_at_50` (squared error of a sampled rollout in units of each dimension's data std,
averaged over dims, starts and samples), `tt_loglik_at_50` (nats per dimension), the same per
dimension group (`tt_mse_velocities_at_50`) and for the ensemble, and `predict_wall_s`.
With --report it reads an existing predict.json instead of rolling out again.

    python scripts/bench_predict.py --run RUN_TT --ensemble RUN_ENS --out DIR [--horizon 100]
    python scripts/bench_predict.py --report DIR/predict.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

STEPS = (1, 10, 50, 100)


def figures(report: dict) -> dict[str, float]:
    """Unit-named figures of a predict.json at the STEPS it reaches."""
    out: dict[str, float] = {}
    for model, s in report["models"].items():
        if model == "simulator":
            continue
        for h in STEPS:
            if h > len(s["mse_all"]):
                continue
            for key, value in s.items():
                if key.startswith("mse_") or key in ("loglik", "reward_mse"):
                    name = "mse" if key == "mse_all" else key
                    out[f"{model}_{name}_at_{h}"] = round(value[h - 1], 6)
    return out


def table(report: dict) -> Table:
    t = Table(
        title=f"open-loop prediction, {report['env']}: {report['starts']} held-out starts x "
        f"{report['samples']} samples (MSE in data-std units, log-lik in nats/dim)"
    )
    groups = [g for g in report["groups"] if g != "all"]
    for col in ("model", "step", "MSE", *(f"MSE {g}" for g in groups), "log-lik"):
        t.add_column(col, justify="right")
    for model, s in report["models"].items():
        if model == "simulator":
            continue
        for h in STEPS:
            if h <= len(s["mse_all"]):
                cells = [s["mse_all"][h - 1], *(s[f"mse_{g}"][h - 1] for g in groups)]
                t.add_row(model, str(h), *(f"{c:.4g}" for c in cells), f"{s['loglik'][h - 1]:.3f}")
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="TT run directory")
    parser.add_argument("--ensemble", help="ensemble run directory (trajplan ensemble)")
    parser.add_argument("--out", help="folder for predict.json and the figures")
    parser.add_argument("--report", help="an existing predict.json: print it, roll out nothing")
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--starts", type=int, default=50)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    wall = None
    if args.report:
        report = json.loads(Path(args.report).read_text())
    else:
        if not (args.run and args.out):
            parser.error("give --run and --out (or --report)")
        import torch

        from trajplan.prediction.report import PredictSettings, check_out_dir, predict, write_report

        torch.set_num_threads(args.threads)
        check_out_dir(args.out)
        settings = PredictSettings(args.horizon, args.starts, args.samples, args.seed)
        t0 = time.perf_counter()
        report = predict(args.run, settings, args.ensemble, progress=True)
        wall = round(time.perf_counter() - t0, 1)
        write_report(report, args.out)
    Console().print(table(report))
    result = {"env": report["env"], "starts": report["starts"], "samples": report["samples"]}
    result.update(figures(report))
    for h in STEPS:
        if h <= len(report.get("data_mean_mse", [])):
            result[f"data_mean_mse_at_{h}"] = round(report["data_mean_mse"][h - 1], 6)
    if wall is not None:
        result["predict_wall_s"] = wall
    print(json.dumps(result))


if __name__ == "__main__":
    main()
