"""Evaluation during training: a few planned episodes every N steps, as metrics records.

Off by default (planning costs far more than training steps on a CPU). Turn it on with
`train.eval_every` (optimizer steps between evaluations; the last step is always one):

    trajplan train ... --set train.eval_every=500 --set train.eval_episodes=3 \
        --set train.eval_episode_steps=200

Each evaluation plans `eval_episodes` episodes with the current weights and the run's own
planning config, on the episode seeds eval_seed, eval_seed+1, ... (default 10,000 and up, apart
from the seeds 0.. that `trajplan eval` uses, so weights picked by these scores are not judged
on the episodes that picked them). It writes an "eval" record (score_mean, score_stderr,
return_mean, episodes, episode_steps, capped) to metrics.jsonl and every logger, and keeps the
best-scoring weights in RUN/best_eval.safetensors (`trajplan eval --weights best-eval`).
`eval_episode_steps` caps the episodes to make this cheap: such scores are labelled
`capped` and are not comparable to full-length ones.
Ctrl-C or SIGTERM during an evaluation ends it within a planning step (it leaves no record);
the loop then checkpoints and stops as it does between training steps.

Planning draws from its own per-episode generators, never from torch's global one, so a
run trains the same steps with or without evaluation, and resume stays exact. Under
torchrun only rank 0 evaluates; the other ranks wait for it at their next step (keep an
evaluation shorter than the process group's timeout, 30 minutes by default).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import nn

from trajplan.config import RunConfig
from trajplan.envs.references import references_for
from trajplan.evaluation.evaluate import EvalInterrupted, evaluate
from trajplan.evaluation.plot import read_rows
from trajplan.runs.checkpoint import BEST_EVAL_FILE, METRICS_FILE, save_weights
from trajplan.runtime import signals_interrupt
from trajplan.training.callbacks import Callback


class Trainable(Protocol):
    """What the evaluation reads of a training run (`trajplan.training.loop.Trainer`)."""

    cfg: RunConfig
    model: nn.Module
    data: Any  # .discretizer
    run_dir: Any
    manifest: dict[str, Any]
    total_steps: int

    def emit(self, kind: str, **fields: Any) -> None: ...


class PeriodicEval(Callback):
    """Plan a few episodes every `train.eval_every` steps and at the last step."""

    def __init__(self, trainer: Trainable, progress: bool = False) -> None:
        tc = trainer.cfg.train
        self.trainer, self.progress = trainer, progress
        self.every, self.episodes = tc.eval_every, tc.eval_episodes
        self.episode_steps, self.seed = tc.eval_episode_steps, tc.eval_seed
        m = trainer.manifest
        self.env = m["env"]
        self.refs = references_for(
            self.env, m.get("ref_min"), m.get("ref_max"), m.get("ref_source") or ""
        )
        self.best = self._best_so_far()

    def _best_so_far(self) -> float:
        """The best eval score already in metrics.jsonl (a resumed run keeps its best)."""
        path = self.trainer.run_dir / METRICS_FILE
        best = -math.inf
        for rec in read_rows(path) if path.exists() else []:
            if rec.get("kind") == "eval" and rec.get("score_mean") is not None:
                best = max(best, float(rec["score_mean"]))
        return best

    def on_step(self, step: int) -> None:
        if step % self.every == 0 or step == self.trainer.total_steps:
            self.evaluate(step)

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, Any]:
        """Plan the episodes with the current weights; emit and return the eval record
        ({} when Ctrl-C or SIGTERM stopped it: the loop then checkpoints and stops)."""

        model, tr = self.trainer.model, self.trainer
        was_training = model.training
        model.eval()
        try:
            with signals_interrupt():  # Ctrl-C/SIGTERM: stop now, the loop checkpoints
                result = evaluate(
                    model, tr.data.discretizer, self.env, tr.cfg.plan,
                    n_episodes=self.episodes, seed=self.seed, episode_steps=self.episode_steps,
                    device=next(model.parameters()).device, refs=self.refs,
                    progress=self.progress,
                )  # fmt: skip
        except EvalInterrupted:  # no record of a part of an evaluation
            return {}
        finally:
            model.train(was_training)
        s = result.summary()
        record = {
            "score_mean": s["score_mean"],
            "score_stderr": s["score_stderr"],
            "return_mean": s["return_mean"],
            "return_stderr": s["return_stderr"],
            "length_mean": s["length_mean"],
            "episodes": self.episodes,
            "episode_steps": self.episode_steps,
            "capped": self.episode_steps is not None,
            "eval_wall_s": round(result.wall_s, 3),
        }
        score = s["score_mean"] if s["score_mean"] is not None else s["return_mean"]
        if score > self.best:
            self.best = score
            meta = {"step": str(step), "score": str(score)}
            save_weights(tr.run_dir / BEST_EVAL_FILE, model, meta)
            record["best"] = True
        tr.emit("eval", **record)
        return record
