"""What a training step is made of, outside the loop itself (`trajplan.training.loop.Trainer`).

    Batches / epoch_permutation   which windows each step trains on, on every rank
    step_seed                     the dropout seed of a step (a resumed run redraws the same)
    target_token_counts           the schedule's unit: non-stop target tokens per window
    training_net                  the model under DDP and torch.compile when asked
    RunningLoss, mean_over_ranks  the loss between two metrics lines, averaged over ranks
    any_rank                      one stop decision for all ranks (time limit)
    validation_loss               the held-out loss, no dropout

All are functions of their arguments (and the clock, for speed and time limits), so a run is
a pure function of its config and a resumed run continues exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from trajplan.model.gpt import TrajectoryGPT

KINDS = ("obs", "act", "rew", "val")  # token kinds of the per-kind losses in metrics


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the windows in one epoch: a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the dropout draws of one optimizer step on one rank."""
    return ((seed * 1_000_003 + rank) * 1_000_000_007 + step) % (2**63)


def target_token_counts(windows: Any, chunk: int = 8192) -> torch.Tensor:
    """[n_windows] int64 on CPU: non-stop target tokens of every window (the schedule's unit)."""
    counts = torch.empty(windows.n_windows, dtype=torch.int64)
    for start in range(0, windows.n_windows, chunk):
        idx = torch.arange(start, min(start + chunk, windows.n_windows))
        _, y, _ = windows.get_batch(idx)
        counts[start : start + len(idx)] = (y != windows.stop_token).sum(1).cpu()
    return counts


@dataclass(frozen=True)
class Batches:
    """Which windows each step of an epoch trains on, on every rank.

    The epoch's permutation (`epoch_permutation`) is padded to a multiple of the world size
    by wrapping around (as DistributedSampler does); rank r takes its r-th column,
    `per_rank` rows per step, so the global batch is batch_size.
    """

    n_windows: int
    world: int
    per_rank: int
    shard_len: int
    steps_per_epoch: int

    @classmethod
    def plan(cls, n_windows: int, batch_size: int, world: int) -> Batches:
        per_rank = math.ceil(batch_size / world)
        shard_len = math.ceil(n_windows / world)
        return cls(n_windows, world, per_rank, shard_len, math.ceil(shard_len / per_rank))

    def grid(self, seed: int, epoch: int) -> torch.Tensor:
        """[shard_len, world] window ids of one epoch: column r is rank r's shard."""
        perm = epoch_permutation(self.n_windows, seed, epoch)
        pad = self.shard_len * self.world - self.n_windows  # wrap around (DistributedSampler)
        return torch.cat([perm, perm[:pad]]).view(self.shard_len, self.world)

    def rows(self, grid: torch.Tensor, batch: int) -> torch.Tensor:
        """[b, world] window ids of step `batch` of the epoch (b = per_rank, less at its end)."""
        a = batch * self.per_rank
        return grid[a : a + self.per_rank]


def training_net(model: nn.Module, dev: torch.device, world: int, compile: bool) -> nn.Module:
    """What the loop calls: the model, under DDP when world > 1, compiled if asked; on CUDA
    TF32 matmuls are switched on."""
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    net: nn.Module = model
    if world > 1:
        ids = [dev.index] if dev.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if compile:
        net = torch.compile(net)
    return net


@torch.no_grad()
def validation_loss(
    model: TrajectoryGPT, vw: Any, dev: torch.device, batch: int, max_windows: int = 8192
) -> dict[str, float]:
    """Loss on the held-out windows vw (evenly spaced, at most max_windows), no dropout:
    the weighted training objective and the cross-entropy by token kind."""
    vw.to(dev)
    idx = torch.linspace(0, vw.n_windows - 1, min(vw.n_windows, max_windows)).long()
    was_training = model.training
    model.eval()
    total, kinds, n = 0.0, torch.zeros(4), 0
    for chunk in idx.split(batch):
        x, y, mask = vw.get_batch(chunk.to(dev))
        logits, loss = model(x, y, mask, vw.goal_batch(chunk.to(dev)))
        total += float(loss) * len(chunk)
        kinds += model.loss_by_kind(logits, y, mask).cpu() * len(chunk)
        n += len(chunk)
    model.train(was_training)
    out = {"val_loss": total / n}
    out.update({f"val_{k}": float(v) / n for k, v in zip(KINDS, kinds, strict=True)})
    return out


def mean_over_ranks(total: torch.Tensor, n: int, world: int) -> float:
    """total / n summed over the ranks of the job (total on the training device)."""
    pair = torch.stack([total.detach().float(), torch.tensor(float(n), device=total.device)])
    if world > 1:
        dist.all_reduce(pair)
    return float(pair[0] / pair[1].clamp(min=1))


class RunningLoss:
    """Loss and tokens summed between two "train" metrics lines; the loss stays on the
    device (no sync per step) until it is read."""

    def __init__(self, dev: torch.device) -> None:
        self.loss = torch.zeros((), device=dev)
        self.reset()

    def add(self, loss: torch.Tensor, tokens: int) -> None:
        self.loss += loss.detach()
        self.n += 1
        self.tokens += tokens

    def read(self, world: int) -> tuple[float, float]:
        """(mean loss over the steps and ranks, tokens per second) since the last reset."""
        speed = self.tokens / max(time.perf_counter() - self.t, 1e-9)
        return mean_over_ranks(self.loss, self.n, world), speed

    def reset(self) -> None:
        self.loss.zero_()
        self.n, self.tokens, self.t = 0, 0, time.perf_counter()


def any_rank(flag: bool, world: int, dev: torch.device) -> bool:
    """True on every rank if it is true on one (every rank must stop at the same step)."""
    if world == 1:
        return flag
    t = torch.tensor(float(flag), device=dev)
    dist.all_reduce(t)
    return bool(t > 0)
