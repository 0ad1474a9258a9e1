"""Per-dimension discretization of transitions into tokens (docs/method.md, Tokens).

Each of the D columns of `[obs, act, r, V]` gets its own bin edges. A value's token is the
largest i with `x >= edge[i]`, clipped to the real bins; the stop token is N (`n_bins`).

- "quantile" (the reference): sort the column, take every `ceil(n/N)`-th value as a lower
  edge and append the column max. That is N+1 edges for large n and
  `ceil(n / ceil(n/N)) + 1` in general. Repeated edges (sparse or constant columns) are kept
  as they are: the reference's tokens depend on them.
- "uniform" (the paper's other variant): N equal-width bins between column min and max.

Exact values (`exact`, config `data.exact_bins`; not the reference, docs/method.md). Either
rule can merge a column's distinct values into one bin and decode them at its midpoint: a
0/1 reward with under 1% ones gets the edges [0, ..., 0, 1], so 0 and 1 share one token that
decodes as 0.5. A **point bin** `[v, nextafter(v)]` holds the value v alone and decodes as v
exactly (`midpoints`); an empty gap bin follows it up to the next edge. Where the fitted
edges do not round-trip every value concerned exactly, the column is laid out anew:
- "discrete" (the default): a column with at most (N+1)//2 distinct values gets a point bin
  for every value (sparse rewards, success flags, few-valued observations);
- "reference": the reference's edges, always.
(A third mode, point bins for any value holding a mass such as a termination penalty, was
measured without a score gain and removed: docs/results.md, Tried and dropped.)
A column whose values already round-trip (a continuous column, a constant one, a mass at the
maximum) keeps the reference's edges, so parity on continuous data is exact.

Small-n deviation from the reference: with fewer than N+1 edges the reference clips tokens to
N-1 and then indexes past its edge array. Here tokens are clipped to the effective number of
bins `min(N, n_edges - 1)`, and `midpoints()` fills the missing bins with the last edge, so
every token in [0, N] still reconstructs. For large n (>= N*(N-1)+1 rows is enough, e.g. any
real dataset) the two are identical.

`Discretizer` is one value type: the edges and both directions of the mapping on numpy and
torch. How edges are fitted (`fit_edges`, `_exact_column`) and the file format (`_write_file`,
`_read_file`) are module functions around it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from trajplan.config import EXACT_BINS
from trajplan.errors import TrajplanError
from trajplan.runtime import atomic_write

KINDS = ("quantile", "uniform")
Array = np.ndarray | torch.Tensor  # the methods take either and answer in kind
_FORMAT_VERSION = "1"


def _quantile_edges(data: np.ndarray, n_bins: int) -> np.ndarray:
    """Every ceil(n/N)-th order statistic of each column, plus the column max."""
    n = data.shape[0]
    per_bin = -(-n // n_bins)  # ceil(n / N)
    ranks = np.arange(0, n, per_bin)  # ceil(n / per_bin) lower edges
    # Sorting contiguous rows of the transposed copy is ~3x faster than sorting along axis 0
    # (and faster than np.partition with ~100 ranks).
    cols = np.sort(np.ascontiguousarray(data.T), axis=1)  # [D, n]
    lower = cols[:, ranks].T  # [ceil(n/per_bin), D]
    return np.concatenate([lower, cols[:, -1:].T], axis=0).astype(np.float64)


def _uniform_edges(data: np.ndarray, n_bins: int) -> np.ndarray:
    """N+1 equally spaced edges from column min to column max (a constant column: all equal).

    Edge i = (lo * (N - i) + hi * i) / N, exact for integer-valued ranges, clipped to
    [lo, hi] and made non-decreasing against rounding.
    """
    lo = data.min(axis=0).astype(np.float64)[None]  # [1, D]
    hi = data.max(axis=0).astype(np.float64)[None]
    i = np.arange(n_bins + 1, dtype=np.float64)[:, None]  # [N+1, 1]
    edges = np.clip((lo * (n_bins - i) + hi * i) / n_bins, lo, hi)  # [N+1, D]
    return np.maximum.accumulate(edges, axis=0)


def fit_edges(
    data: np.ndarray, n_bins: int, kind: str = "quantile", exact: str = "discrete"
) -> np.ndarray:
    """Edges [n_edges, D] float64 of `kind` for data [n, D]; the rules in the module docstring."""
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0:
        raise TrajplanError(f"cannot fit a discretizer on data of shape {data.shape}")
    if n_bins < 1:
        raise TrajplanError(f"n_bins must be at least 1, got {n_bins}")
    _check_finite(data, "discretizer data")
    _check_kind(kind)
    check_exact_mode(exact)
    fit = _quantile_edges if kind == "quantile" else _uniform_edges
    edges = fit(data, n_bins)
    if exact != "reference":
        for j in range(data.shape[1]):
            edges[:, j] = _exact_column(data[:, j], edges[:, j], n_bins)
    return edges


def _exact_column(x: np.ndarray, ref: np.ndarray, n_bins: int) -> np.ndarray:
    """One column's edges [n_edges] with a point bin for each of its few values (x [n]).

    `ref` are the kind's edges; they are kept when every value already round-trips, or when
    the new layout would need more edges than the other columns have (small data).
    """
    values = np.unique(np.asarray(x, dtype=np.float64))
    n_edges = ref.shape[0]
    if len(values) > (n_bins + 1) // 2 or _round_trips(ref, values, n_bins):
        return ref  # many values (continuous), or the kind's edges already decode them
    if n_edges - 1 < 2 * len(values):
        return ref  # does not fit (small data): the kind's edges
    out = np.sort(np.concatenate([values, np.nextafter(values, np.inf)]))  # point, gap, ...
    return np.concatenate([out, np.repeat(out[-1:], n_edges - len(out))])


def _round_trips(edges: np.ndarray, values: np.ndarray, n_bins: int) -> bool:
    """Whether every value decodes to itself under one column's edges [n_edges]."""
    disc = Discretizer(edges[:, None], n_bins, "quantile")
    back = disc.reconstruct(disc.discretize(values[:, None]))[:, 0]
    return bool(np.array_equal(back, values))


def check_exact_mode(mode: str) -> None:
    if mode not in EXACT_BINS:
        raise TrajplanError(f"unknown exact-bins mode {mode!r}: use one of {', '.join(EXACT_BINS)}")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise TrajplanError(f"unknown discretizer {kind!r}: use one of {', '.join(KINDS)}")


def _check_finite(x: Array, what: str) -> None:
    ok = bool(torch.isfinite(x).all()) if isinstance(x, torch.Tensor) else np.isfinite(x).all()
    if not ok:
        raise TrajplanError(f"{what} contains NaN or inf values")


def _tokens_numpy(edges: np.ndarray, x: np.ndarray, top: int) -> np.ndarray:
    """Largest i with edges[i, j] <= x[..., j], clipped to [0, top]: edges [n_edges, d]."""
    flat = x.reshape(-1, x.shape[-1])  # [M, d]
    tok = np.empty(flat.shape, dtype=np.int64)
    for j in range(flat.shape[1]):  # one vectorized search per column
        tok[:, j] = np.searchsorted(edges[:, j], flat[:, j], side="right")
    tok -= 1
    np.clip(tok, 0, top, out=tok)
    return tok.reshape(x.shape)  # [..., d] int64


def _tokens_torch(edges_t: torch.Tensor, x: torch.Tensor, top: int) -> torch.Tensor:
    """`_tokens_numpy` on x's device: edges_t [d, n_edges] float64, contiguous."""
    flat = x.reshape(-1, x.shape[-1]).to(torch.float64).T.contiguous()  # [d, M]
    tok = torch.searchsorted(edges_t, flat, right=True) - 1  # largest i: edge[i] <= x
    return tok.clamp_(0, top).T.reshape(x.shape)  # [..., d] int64


def _write_file(path: Path, edges: np.ndarray, n_bins: int, kind: str) -> None:
    """A safetensors file: tensor "edges" [n_edges, D] and kind/n_bins/format metadata."""
    from safetensors.numpy import save_file

    meta = {
        "kind": kind,
        "n_bins": str(n_bins),
        "format": "trajplan-discretizer",
        "version": _FORMAT_VERSION,
    }
    tensors = {"edges": np.ascontiguousarray(edges)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _read_file(path: Path) -> tuple[np.ndarray, int, str]:
    """(edges, n_bins, kind) from a file `_write_file` wrote; TrajplanError for anything else."""
    from safetensors import safe_open

    if not path.is_file():
        raise TrajplanError(f"discretizer file not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            edges = f.get_tensor("edges")
    except Exception as exc:  # corrupt file, not safetensors, no "edges"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrajplanError(f"{path}: not a trajplan discretizer file ({first})") from None
    if meta.get("format") != "trajplan-discretizer":
        raise TrajplanError(f"{path}: not a trajplan discretizer file (metadata {meta})")
    return edges, int(meta["n_bins"]), meta["kind"]


class Discretizer:
    """Bin edges for every dimension; tokens <-> values. See the module docstring."""

    def __init__(self, edges: np.ndarray, n_bins: int, kind: str = "quantile") -> None:
        _check_kind(kind)
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 2 or edges.shape[0] < 2 or n_bins < 1:
            raise TrajplanError(f"bad discretizer edges of shape {edges.shape} for {n_bins} bins")
        if np.any(np.diff(edges, axis=0) < 0):
            raise TrajplanError("discretizer edges must be non-decreasing in every column")
        self.kind = kind
        self.n_bins = int(n_bins)
        self.edges = edges  # [n_edges, D]
        self._torch_cache: dict[tuple[str, torch.dtype, str], torch.Tensor] = {}

    @classmethod
    def fit(
        cls, data: np.ndarray, n_bins: int = 100, kind: str = "quantile", exact: str = "discrete"
    ) -> Discretizer:
        """Fit edges on data [n, D] (all real transitions); see `fit_edges`."""
        return cls(fit_edges(data, n_bins, kind, exact), n_bins, kind)

    # -- shapes ------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Number of columns D."""
        return self.edges.shape[1]

    @property
    def n_bins_effective(self) -> int:
        """Bins that exist: min(N, n_edges - 1) (equal to N for large data)."""
        return min(self.n_bins, self.edges.shape[0] - 1)

    @property
    def stop_token(self) -> int:
        return self.n_bins

    def _cols(self, dims: slice | None) -> slice:
        return slice(None) if dims is None else dims

    def _width(self, dims: slice | None) -> int:
        return len(range(self.dim)[self._cols(dims)])

    def _check_shape(self, x: Array, dims: slice | None) -> None:
        d = self._width(dims)
        if x.ndim == 0 or x.shape[-1] != d:
            raise TrajplanError(f"expected values with last dimension {d}, got {tuple(x.shape)}")

    # -- tokens ------------------------------------------------------------------------------

    def discretize(self, x: Array, dims: slice | None = None) -> Array:
        """Values [..., d] -> int64 tokens [..., d]; `dims` says which columns x holds.

        numpy in -> numpy out; a torch tensor in -> a torch tensor on the same device.
        """
        self._check_shape(x, dims)
        _check_finite(x, "values to discretize")
        top = self.n_bins_effective - 1
        if isinstance(x, torch.Tensor):
            return _tokens_torch(self._torch_edges_t(x.device, dims), x, top)
        return _tokens_numpy(self.edges[:, self._cols(dims)], np.asarray(x), top)

    def midpoints(self) -> np.ndarray:
        """[N, D] float64 bin midpoints; bins beyond the effective count hold the last edge,
        and a point bin [v, nextafter(v)] decodes as v exactly."""
        mids = np.repeat(self.edges[-1:], self.n_bins, axis=0)
        k = self.n_bins_effective
        lo, hi = self.edges[:k], self.edges[1 : k + 1]
        mids[:k] = np.where(hi == np.nextafter(lo, np.inf), lo, 0.5 * (lo + hi))
        return mids

    def reconstruct(self, tokens: Array, dims: slice | None = None) -> Array:
        """Tokens [..., d] -> bin midpoints [..., d] (float64); the stop token N acts as N-1."""
        self._check_shape(tokens, dims)
        if isinstance(tokens, torch.Tensor):
            mids = self._torch_mids(tokens.device, torch.float64)[:, self._cols(dims)]
            tok = tokens.long().clamp(0, self.n_bins - 1)
            cols = torch.arange(mids.shape[1], device=tokens.device)
            return mids[tok, cols]
        mids = self.midpoints()[:, self._cols(dims)]  # [N, d]
        tok = np.clip(np.asarray(tokens, dtype=np.int64), 0, self.n_bins - 1)
        return mids[tok, np.arange(mids.shape[1])]

    def expectation(self, probs: Array, dim: int) -> Array:
        """sum_i p_i * midpoint_i over the N real bins of column `dim`.

        docs/method.md, Planner, step 3.

        probs [..., N+1] (stop column dropped) or [..., N]; not renormalised. Returns [...],
        numpy for numpy input, a tensor of probs' dtype and device for a tensor.
        """
        if probs.shape[-1] not in (self.n_bins, self.n_bins + 1):
            raise TrajplanError(
                f"expected {self.n_bins} or {self.n_bins + 1} probabilities, got {probs.shape[-1]}"
            )
        if isinstance(probs, torch.Tensor):
            mids = self._torch_mids(probs.device, probs.dtype)[:, dim]  # [N]
            return probs[..., : self.n_bins] @ mids
        return np.asarray(probs)[..., : self.n_bins] @ self.midpoints()[:, dim]

    # -- torch copies (cached per device) ------------------------------------------------------

    def _torch_mids(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = ("mids", dtype, str(device))
        if key not in self._torch_cache:
            self._torch_cache[key] = torch.as_tensor(self.midpoints(), dtype=dtype, device=device)
        return self._torch_cache[key]

    def _torch_edges_t(self, device: torch.device, dims: slice | None) -> torch.Tensor:
        key = ("edges_t", torch.float64, str(device))
        if key not in self._torch_cache:
            t = torch.as_tensor(self.edges.T.copy(), dtype=torch.float64, device=device)
            self._torch_cache[key] = t  # [D, n_edges]
        return self._torch_cache[key][self._cols(dims)].contiguous()

    # -- persistence --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Plain numpy arrays and scalars; `from_state_dict` rebuilds an equal discretizer."""
        return {"kind": self.kind, "n_bins": self.n_bins, "edges": self.edges.copy()}

    @classmethod
    def from_state_dict(cls, d: dict) -> Discretizer:
        try:
            return cls(np.asarray(d["edges"]), int(d["n_bins"]), str(d["kind"]))
        except KeyError as exc:
            raise TrajplanError(f"discretizer state is missing {exc.args[0]!r}") from None

    def save(self, path: str | Path) -> None:
        """Write a safetensors file (edges + kind/n_bins metadata) atomically."""
        _write_file(Path(path), self.edges, self.n_bins, self.kind)

    @classmethod
    def load(cls, path: str | Path) -> Discretizer:
        """Read a file `save` wrote; TrajplanError if it is missing or not one."""
        return cls(*_read_file(Path(path)))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Discretizer)
            and self.kind == other.kind
            and self.n_bins == other.n_bins
            and np.array_equal(self.edges, other.edges)
        )

    def __repr__(self) -> str:
        return f"Discretizer(kind={self.kind!r}, n_bins={self.n_bins}, dim={self.dim})"

    def summary(self) -> str:
        """One line for logs: kind, bins, and how many bins are empty (repeated edges)."""
        k = self.n_bins_effective
        empty = int((self.edges[1 : k + 1] == self.edges[:k]).sum())
        return json.dumps({"kind": self.kind, "n_bins": self.n_bins, "empty_bins": empty})
