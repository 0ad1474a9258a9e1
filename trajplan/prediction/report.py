"""`trajplan predict`: a TT run (and an ensemble run) rolled out open-loop from held-out
states and scored against the simulator (docs/method.md, Long-horizon prediction).

    predict       check everything, pick the starts, roll out, score; returns the report dict
    write_report  predict.json, predict.png and predict.svg (error and log-likelihood against
                  the horizon, one line per model)
    summary       the headline figures: mse and log-likelihood at steps 10 / 50 / 100
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trajplan.config import ModelConfig
from trajplan.data.episodes import Episodes, load_episodes
from trajplan.errors import TrajplanError
from trajplan.guards import check_disk, check_memory
from trajplan.guards import check_out_dir as check_out_folder
from trajplan.prediction.heldout import SPLIT_SEED, pick_starts, split_held_out
from trajplan.prediction.open_loop import SIGMA_MIN, TruthReplay, dim_groups, rollout, score
from trajplan.prediction.tt import TTPredictor
from trajplan.runs.checkpoint import load_checkpoint
from trajplan.runs.ensemble import EnsembleRun, is_ensemble_run, load_ensemble
from trajplan.runs.load import run_kind
from trajplan.runtime import atomic_write, check_writable, resolve_device, write_json

REPORT_FILE = "predict.json"
FIGURES = ("predict.png", "predict.svg")
SUMMARY_STEPS = (1, 10, 50, 100)


@dataclass
class PredictSettings:
    """What `trajplan predict` was asked for."""

    horizon: int = 100
    starts: int = 50
    samples: int = 8
    seed: int = 0
    dataset: str | None = None  # held-out episodes from another dataset (all of its episodes)
    weights: str = "last"
    device: str = "auto"


def _held_out(
    ckpt_dataset: str, val_fraction: float, other: str | None, obs_dim: int
) -> tuple[Episodes, Episodes, str]:
    """(held-out episodes, episodes that set the error scale, the rule in words)."""
    if other and other != ckpt_dataset:
        ep = load_episodes(other)
        rule = f"every episode of {other} (the run trained on {ckpt_dataset})"
        held, scale_ep = ep, ep
    else:
        ep = load_episodes(ckpt_dataset)
        scale_ep, held = split_held_out(ep, val_fraction)
        rule = (
            f"the run's validation split of {ckpt_dataset}: {held.n_episodes} of "
            f"{ep.n_episodes} episodes (data.val_fraction {val_fraction}, split seed {SPLIT_SEED})"
        )
    if held.obs_dim != obs_dim:
        raise TrajplanError(f"dataset has {held.obs_dim} observation dims, the model {obs_dim}")
    return held, scale_ep, rule


def _check_ensemble(ens: EnsembleRun, dataset: str, val_fraction: float, other: str | None) -> None:
    """The ensemble must have trained on the TT run's training episodes, no held-out one."""
    if ens.dataset_id != dataset:
        raise TrajplanError(
            f"ensemble {ens.run_dir} trained on {ens.dataset_id}, the TT run on {dataset}: "
            f"train one on the same data (trajplan ensemble --dataset {dataset})"
        )
    if not other and (ens.val_fraction, ens.split_seed) != (val_fraction, SPLIT_SEED):
        raise TrajplanError(
            f"ensemble {ens.run_dir} held out val_fraction {ens.val_fraction}, the TT run "
            f"{val_fraction}: retrain it with --val-fraction {val_fraction}"
        )


def check_tt_run(run: str | Path) -> None:
    """A one-line error unless `run` could be a TT run (not a BC, IQL or ensemble run)."""
    if is_ensemble_run(run):
        raise TrajplanError(f"{run} is an ensemble run, not a TT run: pass it as --ensemble")
    kind = run_kind(run)
    if kind != "tt":
        raise TrajplanError(
            f"{run} is a {kind.upper()} run; predict needs a TT run (trajplan train)"
        )


def predict(
    run: str | Path,
    settings: PredictSettings,
    ensemble: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Roll the TT run (and the ensemble) out from held-out starts; the report as a dict."""
    check_tt_run(run)
    ens = load_ensemble(ensemble) if ensemble is not None else None
    dev = resolve_device(settings.device)
    ckpt = load_checkpoint(run, device=dev, which=settings.weights)
    cfg = ckpt.model.cfg
    val_fraction = ckpt.config.data.val_fraction
    if ens is not None:
        _check_ensemble(ens, ckpt.dataset_id, val_fraction, settings.dataset)
    held, scale_ep, rule = _held_out(ckpt.dataset_id, val_fraction, settings.dataset, cfg.obs_dim)
    starts = pick_starts(held, settings.horizon, settings.starts, settings.seed)
    _check_memory(cfg, starts.n, settings, dev, ens)
    obs = scale_ep.observations.astype(np.float64)
    scale = obs.std(0) + 1e-6  # [o]
    # no information: the training states' mean as every prediction
    mean_mse = (((obs.mean(0) - starts.truth) / scale) ** 2).mean(axis=(0, 2))  # [H]
    groups = dim_groups(ckpt.env, cfg.obs_dim)
    models: list[Any] = [TruthReplay(starts), TTPredictor(ckpt.model, ckpt.discretizer, dev)]
    if ens is not None:
        models.append(ens.predictor())
    scores = {}
    for model in models:
        roll = rollout(model, starts, settings.samples, settings.seed, progress)
        scores[model.name] = score(roll, starts, scale, groups)
    return {
        "run": str(run),
        "ensemble": str(ensemble) if ensemble is not None else None,
        "env": ckpt.env,
        "dataset": settings.dataset or ckpt.dataset_id,
        "held_out": rule,
        "horizon": settings.horizon,
        "starts": starts.n,
        "start_steps": [[int(e), int(t)] for e, t in zip(starts.episode, starts.t, strict=True)],
        "samples": settings.samples,
        "seed": settings.seed,
        "weights": settings.weights,
        "groups": groups,
        "scale": scale.tolist(),
        "sigma_min": SIGMA_MIN,
        "models": scores,
        "data_mean_mse": mean_mse.tolist(),
        "summary": summary(scores),
    }


def summary(scores: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """{"tt_mse_at_10": ..., "ensemble_loglik_at_100": ...} at the SUMMARY_STEPS that exist."""
    out = {}
    for name, s in scores.items():
        if name == "simulator":
            continue
        for h in SUMMARY_STEPS:
            if h <= len(s["mse_all"]):
                out[f"{name}_mse_at_{h}"] = round(s["mse_all"][h - 1], 6)
                out[f"{name}_loglik_at_{h}"] = round(s["loglik"][h - 1], 4)
    return out


def check_out_dir(out: str | Path, horizon: int = 100, ensemble: bool = False) -> Path:
    """Before any work: the output folder can be made and written (nothing is created yet,
    so a refusal leaves no empty folder), and the report and figures fit on its disk."""
    check_out_folder(out)
    curves = (3 if ensemble else 2) * (12 + 2 * 8)  # per model: mse per group, loglik, ...
    size = 24 * horizon * curves + 2**16  # predict.json: numbers of ~24 characters
    check_disk(out, size + 2**20, max(size, 2**19), "the prediction report")
    return Path(out)


def _check_memory(cfg: Any, n_starts: int, s: PredictSettings, dev: Any, ens: Any) -> None:
    """Refuse starts x samples rollouts that cannot fit in memory, naming the larger."""
    rows = n_starts * s.samples
    need = predict_bytes(cfg, rows, s.horizon)
    if ens is not None:
        width = sum(p.shape[-1] for p in ens.net.parameters() if p.dim() == 3)
        need += 4 * rows * ens.net.members * (width + 4 * cfg.obs_dim + 8)
    lower = "--samples" if s.samples >= n_starts else "--starts"
    what = f"predicting {n_starts:,} starts x {s.samples:,} samples x {s.horizon:,} steps"
    check_memory(need, dev, what, lower)


def write_report(report: dict[str, Any], out: str | Path) -> list[Path]:
    """predict.json and the two figures in `out` (each written whole, then renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    check_writable(out, "--out folder")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, s in report["models"].items():
        if name == "simulator":
            continue
        steps = np.arange(1, len(s["mse_all"]) + 1)
        axes[0].plot(steps, s["mse_all"], label=name)
        axes[1].plot(steps, s["loglik"], label=name)
    h = np.arange(1, len(report["data_mean_mse"]) + 1)
    axes[0].plot(h, report["data_mean_mse"], "k--", lw=0.8, label="data mean (no information)")
    axes[0].set(yscale="log", xlabel="steps ahead", ylabel="MSE (units of data std)")
    axes[1].set(xlabel="steps ahead", ylabel="log-likelihood of true state (nats/dim)")
    axes[0].set_title(f"open-loop prediction, {report['env']}")
    axes[1].set_title(f"{report['starts']} held-out starts x {report['samples']} samples")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    paths = [write_json(out / REPORT_FILE, report)]
    for name in FIGURES:
        fmt = name.rsplit(".", 1)[1]

        def save(p: Path, f: str = fmt) -> None:
            fig.savefig(p, format=f, dpi=120, bbox_inches="tight")

        paths.append(atomic_write(out / name, save))
    plt.close(fig)
    return paths


def predict_bytes(model: ModelConfig, rows: int, horizon: int) -> int:
    """Peak memory of rolling out `rows` (starts x samples) rows of a TT model `horizon`
    steps: each row's key/value caches and window activations (as in plan_bytes), logits,
    and the rollouts with their actions and scoring copies (float64)."""
    c, v, w = model.n_embd, model.vocab_size + 1, model.block_size
    per_row = 4 * (2 * model.n_layer * w * c + 12 * v + w * (c + model.n_head * w // 2))
    per_row += 8 * horizon * (4 * model.obs_dim + model.act_dim + 2)
    return rows * per_row
