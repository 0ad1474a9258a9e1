"""AdamW and the learning-rate schedule of the reference (docs/method.md, Optimizer and schedule).

- AdamW(lr 6e-4, betas (0.9, 0.95)); weight decay 0.1 on Linear weights and the
  per-dimension head only (`decay_parameter_names`);
- learning rate by tokens seen (non-stop targets): linear warmup over one pass of the data
  (n_windows * block_size tokens), then a cosine to 0.1x at 20 passes that the reference
  never clamps (it rises again after); `train.clamp_schedule` holds 0.1x after the end, and
  `train.fit_schedule` (not the reference) ends a clamped cosine where the run ends
  (cut, shorter or longer than final_mult epochs);
- n_epochs = int(1e6 / n_windows * n_epochs_ref) unless `train.epochs` is given.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from trajplan.config import TrainConfig


def decay_parameter_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """(decayed, not decayed) parameter names: Linear weights and the head are decayed;
    biases, LayerNorm, the token embedding and the position embedding are not."""
    decay, no_decay = [], []
    for mod_name, mod in model.named_modules():
        for name, _ in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{name}" if mod_name else name
            if (isinstance(mod, nn.Linear) and name == "weight") or (
                mod is model and name == "head"
            ):
                decay.append(full)
            else:
                no_decay.append(full)
    return decay, no_decay


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    decay, no_decay = decay_parameter_names(model)
    params = dict(model.named_parameters())
    groups = [
        {"params": [params[n] for n in decay], "weight_decay": cfg.weight_decay},
        {"params": [params[n] for n in no_decay], "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"  # one kernel for all parameters
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused)


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate as a function of tokens seen (docs/method.md, Optimizer and schedule)."""

    lr: float
    warmup_tokens: float
    final_tokens: float
    clamp: bool = False  # False: the reference's unclamped cosine

    @classmethod
    def for_data(cls, cfg: TrainConfig, n_windows: int, block_size: int) -> LRSchedule:
        one_pass = n_windows * block_size
        return cls(
            cfg.lr, cfg.warmup_mult * one_pass, cfg.final_mult * one_pass, cfg.clamp_schedule
        )

    def multiplier(self, tokens: float) -> float:
        if tokens < self.warmup_tokens:
            return tokens / max(1.0, self.warmup_tokens)
        progress = (tokens - self.warmup_tokens) / max(1.0, self.final_tokens - self.warmup_tokens)
        if self.clamp:
            progress = min(progress, 1.0)
        return max(0.1, 0.5 * (1.0 + math.cos(math.pi * progress)))

    def __call__(self, tokens: float) -> float:
        return self.lr * self.multiplier(tokens)

    def fitted(self, schedule_steps: float, run_steps: int) -> LRSchedule:
        """`train.fit_schedule`: the (clamped) cosine ends where the run ends. schedule_steps
        is the optimizer steps this schedule spans (final_mult epochs); warmup and cosine
        are scaled by run_steps / schedule_steps: shorter for a run cut by max_steps or with
        fewer epochs, longer for a run with more epochs than final_mult."""
        scale = run_steps / max(1.0, schedule_steps)
        if scale == 1.0:
            return self
        return dataclasses.replace(
            self,
            warmup_tokens=self.warmup_tokens * scale,
            final_tokens=self.final_tokens * scale,
            clamp=True,
        )


def n_epochs_for(cfg: TrainConfig, n_windows: int) -> int:
    """`epochs` if given, else the reference's int(1e6 / n_windows * n_epochs_ref), >= 1."""
    if cfg.epochs is not None:
        return cfg.epochs
    return max(1, int(1e6 / n_windows * cfg.n_epochs_ref))
