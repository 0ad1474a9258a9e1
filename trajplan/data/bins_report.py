"""How well a discretizer keeps each column: distinct values, tokens, round-trip error.

`check_columns` measures every column of the data the bins were fitted on; `merge_warning`
is training's one line when a few-valued column (a sparse reward, a flag) has distinct values
merged into one token or decoded wrongly (trajplan.data.tokens, exact values). `trajplan data
info` shows the same figures, and a run's config.json records them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajplan.data.tokens import Discretizer


@dataclass
class ColumnCheck:
    """One column under a discretizer: its distinct values, the tokens they use, and the
    round-trip error |reconstruct(discretize(x)) - x| (max and mean over the rows)."""

    name: str
    distinct: int
    tokens: int
    max_error: float
    mean_error: float
    few_valued: bool  # at most N distinct values: each could have a token of its own

    @property
    def merged(self) -> bool:
        """Distinct values of a few-valued column share a token, or one decodes wrongly."""
        return self.few_valued and (self.tokens < self.distinct or self.max_error > 0)

    def describe(self) -> str:
        return (
            f"{self.name} ({self.distinct} values, {self.tokens} tokens, "
            f"max error {self.max_error:.3g})"
        )


def check_columns(disc: Discretizer, data: np.ndarray, names: list[str]) -> list[ColumnCheck]:
    """A ColumnCheck for every column of data [n, D] (the transitions the bins were fitted on)."""
    data = np.asarray(data)
    tok = disc.discretize(data)  # [n, D]
    err = np.abs(disc.reconstruct(tok) - data.astype(np.float64))  # [n, D]
    out = []
    for j, name in enumerate(names):
        distinct = len(np.unique(data[:, j]))
        out.append(
            ColumnCheck(
                name=name,
                distinct=distinct,
                tokens=len(np.unique(tok[:, j])),
                max_error=float(err[:, j].max()),
                mean_error=float(err[:, j].mean()),
                few_valued=distinct <= disc.n_bins,
            )
        )
    return out


def merge_warning(checks: list[ColumnCheck], mode: str) -> str | None:
    """One line naming the few-valued columns whose values the bins merge or misdecode."""
    bad = [c.describe() for c in checks if c.merged]
    if not bad:
        return None
    hint = (
        "data.exact_bins=discrete gives each value a token of its own"
        if mode == "reference"
        else "more bins (data.n_bins) may keep them apart"
    )
    return f"warning: the bins merge or misdecode distinct values of {', '.join(bad)}: {hint}"
