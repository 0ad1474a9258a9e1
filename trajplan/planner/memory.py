"""The memory planning needs: planning E episodes at once with a model and a search's
settings, checked against the device before anything is loaded or played (the generic
checks: `trajplan.guards`).

    plan_bytes      planning E episodes at once: KV caches, logits, windows, envs
    check_planning  refuse planning (or acting) E episodes that cannot fit on the device
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trajplan.guards import check_memory

if TYPE_CHECKING:
    from trajplan.config import ModelConfig, PlanConfig

ENV_BYTES = 2 * 2**20  # one MuJoCo env of an episode (model, data, wrappers): ~1-2 MiB


def plan_bytes(model: ModelConfig, plan: PlanConfig, episodes: int) -> int:
    """Peak memory of planning `episodes` episodes in one batch with `plan` (float32).

    Per row (R = episodes x n_expand x beam_width rows while sampling actions): the
    key/value caches of every layer over the window, the logits and what sampling keeps of
    them (softmax, sorted copies and indices), the activations and attention scores of a
    window recomputed when it slides, and the planned tokens; per episode, its env."""
    c, d, v = model.n_embd, model.transition_dim, model.vocab_size + 1
    w = min(model.block_size, plan.max_context_transitions * d - 1)  # planner.plan_window
    if plan.window == "grow":
        w = model.block_size
    rows = episodes * plan.n_expand * plan.beam_width
    per_row = 4 * (2 * model.n_layer * w * c + 12 * v + w * (c + model.n_head * w // 2))
    per_row += 8 * plan.horizon * (d + 2)  # planned tokens (int64), rewards (float64)
    return rows * per_row + episodes * ENV_BYTES


def check_planning(
    model: ModelConfig | None,
    plan: PlanConfig | None,
    episodes: int,
    device: str = "cpu",
    workers: int = 1,
) -> None:
    """Refuse planning (or, plan None, acting: a policy run) `episodes` episodes at once that
    cannot fit on `device`, naming the largest of the sizes asked as the option to lower.
    Worker processes share the CPU's memory; on GPUs they split the episodes."""
    if device == "auto" or device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            device = "cpu"
        elif device == "auto":
            device = "cuda"
    if device.startswith("cuda") and workers > 1:
        import torch

        episodes = -(-episodes // min(workers, torch.cuda.device_count()))
    if model is None or plan is None:
        need, what, lower = episodes * ENV_BYTES, f"playing {episodes:,} episodes", "--episodes"
    else:
        need = plan_bytes(model, plan, episodes)
        sizes = {"--episodes": episodes, "--beam-width": plan.beam_width}
        sizes["--n-expand"] = plan.n_expand
        lower = max(sizes, key=lambda k: sizes[k])
        what = (
            f"planning {episodes:,} episodes x {plan.beam_width:,} beams x {plan.n_expand} "
            "expansions at once"
        )
    check_memory(need, device, what, lower)
