"""Reference returns of normalized scores: facts about an env and its datasets, one owner.

    normalized_score   100 * (return - ref_min) / (ref_max - ref_min): 0 random, 100 expert
    reference_scores   a dataset's: its metadata's ref_min/max_score, else the env's D4RL
                       constants (what `trajplan data info` and loaded episodes report)
    references_for     an evaluation's: the given references, else the env's D4RL constants

The D4RL constants live in the env registry (`trajplan.envs.registry.REGISTRY`); they were
measured on older MuJoCo versions, so they only approximate the v5 envs, and every result
names its source. See docs/method.md, Scores.
"""

from __future__ import annotations

from dataclasses import dataclass

from trajplan.envs.registry import EnvInfo, resolve_env

D4RL_SOURCE = "D4RL constants (approximate for v5 envs)"  # a dataset's fallback
METADATA_SOURCE = "dataset metadata"


def normalized_score(ret: float, ref_min: float, ref_max: float) -> float:
    """D4RL normalized score: 0 = random, 100 = expert."""
    return 100.0 * (ret - ref_min) / (ref_max - ref_min)


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
    if lo is not None and hi is not None:
        if constants is not None and (float(lo), float(hi)) == constants:
            # a locally collected dataset that stored the D4RL constants: say so
            return float(lo), float(hi), f"{METADATA_SOURCE}: {D4RL_SOURCE}"
        return float(lo), float(hi), METADATA_SOURCE
    if constants is not None:
        return *constants, D4RL_SOURCE
    return None, None, None


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
    """The given references (e.g. from dataset metadata), else the env's D4RL constants."""
    if ref_min is not None and ref_max is not None:
        return References(float(ref_min), float(ref_max), source or METADATA_SOURCE)
    constants = _constants(resolve_env(env))
    if constants is not None:
        return References(*constants, "D4RL constants")
    return References(None, None, "none")
