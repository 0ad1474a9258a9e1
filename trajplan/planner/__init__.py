"""Beam-search planning with the Trajectory Transformer (docs/method.md, Planner), exact and fast.

Read top to bottom, one concern per module:

- `sampling`: cdf and top-k filters, the inverse-CDF draw on per-episode uniforms, scores.
- `windows`: the logits of every planned token, through the whole window ("full") or
  key/value-cached with a shared-prefix recompute when the window slides ("cached").
- `candidates`: where candidate actions come from besides the model (`FirstAction`, `Chain`;
  a prior policy's in `prior`).
- `scorers`: how beams are ranked (`ValueScorer`: TT's value).
- `search`: `beam_search` for E episodes at once and its `PlanResult`.
- `planner`: `Planner`, the per-step interface an evaluation drives (context, plan_freq,
  dropping finished episodes), and `check_plan_config`.
"""

from trajplan.planner.planner import (
    VALUE_PLACEHOLDER,
    Planner,
    check_plan_config,
    plan_window,
)
from trajplan.planner.sampling import (
    Uniforms,
    beam_scores,
    cdf_filter,
    draw,
    expectation,
    sample_token,
    top_k_filter,
    uniforms_per_plan,
)
from trajplan.planner.search import PlanResult, beam_search
from trajplan.planner.windows import (
    CachedWindow,
    FullWindow,
    distinct_rows,
    empty_cache,
    gather_rows,
    window_start,
)

__all__ = [
    "VALUE_PLACEHOLDER",
    "CachedWindow",
    "FullWindow",
    "PlanResult",
    "Planner",
    "Uniforms",
    "beam_scores",
    "beam_search",
    "cdf_filter",
    "check_plan_config",
    "distinct_rows",
    "draw",
    "expectation",
    "empty_cache",
    "gather_rows",
    "plan_window",
    "sample_token",
    "top_k_filter",
    "uniforms_per_plan",
    "window_start",
]
