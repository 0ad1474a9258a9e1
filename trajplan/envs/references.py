"""Reference returns of normalized scores: facts about an env and its datasets, one owner.

    normalized_score   100 * (return - ref_min) / (ref_max - ref_min): 0 random, 100 expert
    reference_scores   a dataset's: its metadata's ref_min/max_score, else the env's D4RL
                       constants (what `trajplan data info` and loaded episodes report)
    references_for     an evaluation's: the given references, else the env's D4RL constants

A pair that cannot normalize (equal, not finite, or min above max) is never used: it would
divide by zero or turn scores upside down. It is set aside with its reason in the source
(`unusable_reason`), and the env's D4RL constants, if any, stand in; else the results hold
raw returns only (scores null).

The D4RL constants live in the env registry (`trajplan.envs.registry.REGISTRY`); they were
measured on older MuJoCo versions, so they only approximate the v5 envs, and every result
names its source. See docs/method.md, Scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trajplan.envs.registry import EnvInfo, resolve_env

D4RL_SOURCE = "D4RL constants (approximate for v5 envs)"  # a MuJoCo dataset's fallback


def d4rl_source(info: EnvInfo | None) -> str:
    """The name of an env's D4RL constants, with the env version they only approximate
    (D4RL measured them on its own envs): v5 for the MuJoCo tasks, v3 for PointMaze."""
    version = (info.gym_id.rpartition("-")[2] if info is not None else "") or "v5"
    return D4RL_SOURCE.replace("v5", version) if version.startswith("v") else D4RL_SOURCE


METADATA_SOURCE = "dataset metadata"


def normalized_score(ret: float, ref_min: float, ref_max: float) -> float:
    """D4RL normalized score: 0 = random, 100 = expert."""
    return 100.0 * (ret - ref_min) / (ref_max - ref_min)


def unusable_reason(ref_min: float, ref_max: float) -> str | None:
    """Why a (ref_min, ref_max) pair cannot normalize scores, or None when it can."""
    if not (math.isfinite(ref_min) and math.isfinite(ref_max)):
        return f"not finite ({ref_min} .. {ref_max})"
    if ref_min == ref_max:
        return f"equal ({ref_min:g} .. {ref_max:g}): no scale"
    if ref_min > ref_max:
        return f"min above max ({ref_min:g} .. {ref_max:g})"
    return None


def _set_aside(source: str, reason: str) -> str:
    return f"{source}; reference scores of the {METADATA_SOURCE} ignored: {reason}"


def _constants(info: EnvInfo | None) -> tuple[float, float] | None:
    """The env's D4RL constants, if the registry has them."""
    if info is None or info.ref_min is None or info.ref_max is None:
        return None
    return info.ref_min, info.ref_max


def reference_scores(
    metadata: dict, info: EnvInfo | None
) -> tuple[float | None, float | None, str | None]:
    """(ref_min, ref_max, source) of a dataset: its own metadata, else the D4RL constants of
    its registry env `info`."""
    lo, hi = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    constants = _constants(info)
    reason = None
    if lo is not None and hi is not None:
        lo, hi = float(lo), float(hi)
        reason = unusable_reason(lo, hi)
        if reason is None and constants is not None and (lo, hi) == constants:
            # a locally collected dataset that stored the D4RL constants: say so
            return lo, hi, f"{METADATA_SOURCE}: {d4rl_source(info)}"
        if reason is None:
            return lo, hi, METADATA_SOURCE
    if constants is not None:
        source = d4rl_source(info)
        return *constants, source if reason is None else _set_aside(source, reason)
    return None, None, None if reason is None else _set_aside("none", reason)


@dataclass
class References:
    """Reference returns for normalized scores, and where they come from."""

    ref_min: float | None
    ref_max: float | None
    source: str  # "dataset metadata", "D4RL constants" or "none"

    def describe(self) -> str:
        """e.g. 'D4RL constants (-280.18 .. 12135.00)' or 'none'."""
        if self.ref_min is None or self.ref_max is None:
            return self.source
        return f"{self.source} ({self.ref_min:.2f} .. {self.ref_max:.2f})"

    def score(self, ret: float) -> float | None:
        if self.ref_min is None or self.ref_max is None:
            return None
        return normalized_score(ret, self.ref_min, self.ref_max)


def references_for(
    env: str, ref_min: float | None = None, ref_max: float | None = None, source: str = ""
) -> References:
    """The given references (e.g. from dataset metadata), else the env's D4RL constants
    (also when the given pair cannot normalize: `unusable_reason`, stated in the source)."""
    reason = None
    if ref_min is not None and ref_max is not None:
        try:  # a run's config.json edited by hand may hold anything
            reason = unusable_reason(float(ref_min), float(ref_max))
        except (TypeError, ValueError):
            reason = f"not numbers ({ref_min!r} .. {ref_max!r})"
        if reason is None:
            return References(float(ref_min), float(ref_max), source or METADATA_SOURCE)
    constants = _constants(resolve_env(env))
    if constants is not None:
        source = "D4RL constants" if reason is None else _set_aside("D4RL constants", reason)
        return References(*constants, source)
    if reason is not None:
        return References(None, None, _set_aside("none", reason))
    return References(None, None, source if source.startswith("none") else "none")
