"""Discretizer: the reference's quantile rule, uniform bins, properties, persistence, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trajplan.data.tokens import Discretizer, fit_edges
from trajplan.errors import TrajplanError


def reference_tokens(x: np.ndarray, edges: np.ndarray, n_bins: int) -> np.ndarray:
    """The public reference's rule, written out: a [n_edges, n, D] comparison tensor, the
    largest True index via argmax of x * (1..n_edges), all-False -> 0, all-True -> n_edges,
    then clip to [0, N-1]."""
    gt = x[None] >= edges[:, None]  # [n_edges, n, D]
    n_edges = edges.shape[0]
    inds = np.argmax(gt * np.arange(1, n_edges + 1)[:, None, None], axis=0)
    inds[(~gt).all(axis=0)] = 0
    inds[gt.all(axis=0)] = n_edges
    return np.clip(inds, 0, n_bins - 1)


def test_repeated_edges_hand_example() -> None:
    col = np.array([0, 0, 0, 0, 0, 0, 1, 2, 3, 4], dtype=np.float32)[:, None]
    disc = Discretizer.fit(col, n_bins=5, exact="reference")
    # ceil(10/5) = 2: every 2nd sorted value, then the max
    np.testing.assert_array_equal(disc.edges[:, 0], [0, 0, 0, 1, 3, 4])
    tok = disc.discretize(col)[:, 0]
    np.testing.assert_array_equal(tok, [2, 2, 2, 2, 2, 2, 3, 3, 4, 4])
    np.testing.assert_array_equal(tok, reference_tokens(col, disc.edges, 5)[:, 0])
    # empty bins 0 and 1 keep their (degenerate) midpoints
    np.testing.assert_array_equal(disc.midpoints()[:, 0], [0, 0, 0.5, 2, 3.5])
    assert disc.n_bins_effective == 5


def test_matches_reference_rule_on_discrete_data() -> None:
    rng = np.random.default_rng(0)
    data = np.concatenate(
        [
            rng.integers(0, 4, (2000, 1)),  # sparse: many repeated edges
            rng.standard_normal((2000, 1)),
            np.zeros((2000, 1)),  # constant column
        ],
        axis=1,
    ).astype(np.float32)
    disc = Discretizer.fit(data, n_bins=50, exact="reference")
    assert disc.edges.shape == (51, 3)
    queries = np.concatenate([data[:500], rng.standard_normal((500, 3)).astype(np.float32) * 3])
    np.testing.assert_array_equal(
        disc.discretize(queries), reference_tokens(queries, disc.edges, 50)
    )


def test_edge_count_rule() -> None:
    # n = 1050, N = 100: ceil(n/N) = 11, ceil(1050/11) = 96 lower edges + max = 97 edges
    data = np.arange(1050, dtype=np.float32)[:, None]
    disc = Discretizer.fit(data, 100)
    assert disc.edges.shape == (97, 1)
    assert disc.n_bins_effective == 96
    assert disc.discretize(data).max() == 95


@settings(max_examples=40, deadline=None)
@given(
    data=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 300), st.integers(1, 3)),
        elements=st.floats(-1e3, 1e3, width=32),
    ),
    n_bins=st.integers(1, 30),
    kind=st.sampled_from(["quantile", "uniform"]),
)
def test_properties(data: np.ndarray, n_bins: int, kind: str) -> None:
    disc = Discretizer.fit(data, n_bins, kind)
    tok = disc.discretize(data)
    assert tok.dtype == np.int64 and tok.shape == data.shape
    assert tok.min() >= 0 and tok.max() <= disc.n_bins_effective - 1 <= n_bins - 1
    recon = disc.reconstruct(tok)
    # reconstruct-then-discretize is the identity on tokens the discretizer produces
    np.testing.assert_array_equal(disc.discretize(recon), tok)
    # the value lies in its bin, so it is within one bin width of the midpoint
    cols = np.arange(data.shape[1])
    width = disc.edges[tok + 1, cols] - disc.edges[tok, cols]
    assert np.all(np.abs(recon - data) <= width + 1e-9)
    assert np.all(disc.edges[tok, cols] <= data)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 400), n_bins=st.integers(1, 40), seed=st.integers(0, 10_000))
def test_quantile_bins_hold_equal_counts(n: int, n_bins: int, seed: int) -> None:
    # distinct values: every bin but the last holds exactly ceil(n/N), the last the rest
    x = np.random.default_rng(seed).permutation(n).astype(np.float32)[:, None]
    disc = Discretizer.fit(x, n_bins)
    counts = np.bincount(disc.discretize(x)[:, 0], minlength=disc.n_bins_effective)
    per_bin = -(-n // n_bins)
    assert len(counts) == disc.n_bins_effective
    if len(counts) > 1:
        assert np.all(counts[:-1] == per_bin)
    assert 1 <= counts[-1] <= per_bin + 1


def test_small_n_clips_to_existing_bins() -> None:
    data = np.array([[3.0], [1.0], [2.0]], dtype=np.float32)
    disc = Discretizer.fit(data, n_bins=10)
    assert disc.edges.shape == (4, 1)  # 1, 2, 3 and the max 3
    assert disc.n_bins_effective == 3
    np.testing.assert_array_equal(disc.discretize(data)[:, 0], [2, 0, 1])
    mids = disc.midpoints()
    assert mids.shape == (10, 1)
    np.testing.assert_array_equal(mids[:, 0], [1.5, 2.5, 3.0] + [3.0] * 7)
    assert disc.reconstruct(np.array([[10]]))[0, 0] == 3.0  # stop token: still defined


def test_stop_token_reconstructs_as_last_bin() -> None:
    data = np.random.default_rng(1).standard_normal((1000, 2))
    disc = Discretizer.fit(data, 10)
    stop = np.full((1, 2), disc.stop_token)
    np.testing.assert_array_equal(disc.reconstruct(stop), disc.reconstruct(stop - 1))
    np.testing.assert_array_equal(disc.reconstruct(stop)[0], disc.midpoints()[9])


def test_uniform_bins_and_constant_column() -> None:
    data = np.stack([np.arange(101.0), np.full(101, 0.1)], axis=1)
    disc = Discretizer.fit(data, n_bins=5, kind="uniform")
    np.testing.assert_array_equal(disc.edges[:, 0], [0, 20, 40, 60, 80, 100])
    np.testing.assert_array_equal(disc.edges[:, 1], 0.1)  # no division by zero
    tok = disc.discretize(data)
    np.testing.assert_array_equal(np.bincount(tok[:, 0]), [20, 20, 20, 20, 21])
    assert (tok[:, 1] == 4).all()
    np.testing.assert_array_equal(disc.reconstruct(tok)[:, 1], 0.1)


def test_dims_slice_selects_columns() -> None:
    data = np.random.default_rng(2).standard_normal((500, 6)).astype(np.float32)
    disc = Discretizer.fit(data, 20)
    full = disc.discretize(data)
    np.testing.assert_array_equal(disc.discretize(data[:, 2:5], dims=slice(2, 5)), full[:, 2:5])
    np.testing.assert_array_equal(
        disc.reconstruct(full[:, 2:5], dims=slice(2, 5)), disc.reconstruct(full)[:, 2:5]
    )
    three_d = data.reshape(50, 10, 6)
    np.testing.assert_array_equal(disc.discretize(three_d), full.reshape(50, 10, 6))
    with pytest.raises(TrajplanError, match="last dimension"):
        disc.discretize(data, dims=slice(0, 2))


def test_torch_matches_numpy() -> None:
    data = np.random.default_rng(3).standard_normal((800, 4)).astype(np.float32)
    disc = Discretizer.fit(data, 30)
    tok = disc.discretize(data)
    tok_t = disc.discretize(torch.from_numpy(data))
    assert isinstance(tok_t, torch.Tensor) and tok_t.dtype == torch.int64
    np.testing.assert_array_equal(tok_t.numpy(), tok)
    np.testing.assert_array_equal(
        disc.reconstruct(torch.from_numpy(tok)).numpy(), disc.reconstruct(tok)
    )


def test_expectation_drops_stop_column_without_renormalising() -> None:
    data = np.random.default_rng(4).standard_normal((400, 3))
    disc = Discretizer.fit(data, 8)
    mids = disc.midpoints()
    probs = np.random.default_rng(5).dirichlet(np.ones(9), size=(2, 5))  # [2, 5, N+1]
    expected = (probs[..., :8] * mids[:, 2]).sum(-1)
    np.testing.assert_allclose(disc.expectation(probs, 2), expected)
    got_t = disc.expectation(torch.from_numpy(probs).float(), 2)
    assert got_t.dtype == torch.float32 and got_t.shape == (2, 5)
    np.testing.assert_allclose(got_t.numpy(), expected, rtol=1e-5, atol=1e-6)
    only_stop = np.zeros(9)
    only_stop[8] = 1.0
    assert disc.expectation(only_stop, 0) == 0.0
    np.testing.assert_allclose(disc.expectation(probs[..., :8], 2), expected)


def test_save_load_and_state_dict_round_trip(tmp_path) -> None:
    data = np.random.default_rng(6).standard_normal((300, 5))
    disc = Discretizer.fit(data, 16, "uniform")
    path = tmp_path / "sub" / "disc.safetensors"
    disc.save(path)
    assert Discretizer.load(path) == disc
    assert sorted(p.name for p in path.parent.iterdir()) == ["disc.safetensors"]  # no temp left
    assert Discretizer.from_state_dict(disc.state_dict()) == disc
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(TrajplanError, match="not a trajplan discretizer"):
        Discretizer.load(bad)
    with pytest.raises(TrajplanError, match="not found"):
        Discretizer.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(bad: float) -> None:
    data = np.random.default_rng(7).standard_normal((50, 2))
    disc = Discretizer.fit(data, 4)
    broken = data.copy()
    broken[3, 1] = bad
    with pytest.raises(TrajplanError, match="NaN or inf"):
        Discretizer.fit(broken, 4)
    with pytest.raises(TrajplanError, match="NaN or inf"):
        disc.discretize(broken)
    with pytest.raises(TrajplanError, match="NaN or inf"):
        disc.discretize(torch.from_numpy(broken))


def test_bad_arguments() -> None:
    with pytest.raises(TrajplanError, match="unknown discretizer"):
        Discretizer.fit(np.zeros((5, 1)), 4, kind="kmeans")
    with pytest.raises(TrajplanError, match="cannot fit"):
        Discretizer.fit(np.zeros((0, 3)), 4)
    with pytest.raises(TrajplanError, match="n_bins"):
        Discretizer.fit(np.zeros((5, 1)), 0)


def test_a_rare_minimum_keeps_the_reference_bins() -> None:
    """A rare outlier at the minimum (the termination penalty) shares quantile bin 0 with the
    lowest ordinary values and decodes as about half of it, in the reference and in the
    default exact bins alike (a column of many values is not few-valued)."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(10_000, 2))
    data[::500, 1] = -100.0  # 0.2% of the rows: less than one bin's share (1%)
    plain = Discretizer.fit(data, 100, exact="reference")
    low = data[:, 1][data[:, 1] > -100].min()
    assert plain.discretize(np.array([[0.0, low]]))[0, 1] == 0  # shares the penalty's bin
    assert plain.midpoints()[0, 1] < -45  # so an ordinary low value decodes as ~-50
    assert Discretizer.fit(data, 100) == plain  # "discrete": not a few-valued column


@pytest.mark.parametrize("kind", ["quantile", "uniform"])
@pytest.mark.parametrize("share", [0.004, 0.01, 0.05])
def test_sparse_reward_round_trips_exactly(kind: str, share: float) -> None:
    """A 0/1 reward with few ones: the reference's quantile edges are [0, ..., 0, 1] and give
    0 and 1 one token (below 1%) that decodes as 0.5; exact bins keep them apart and
    decode them as 0.0 and 1.0. The continuous column beside it keeps the reference's edges."""
    rng = np.random.default_rng(1)
    n = 20_000
    r = np.zeros(n, dtype=np.float32)
    r[rng.choice(n, int(share * n), replace=False)] = 1.0
    cols = np.stack([r, rng.normal(size=n).astype(np.float32)], 1)  # [n, 2]
    ref = Discretizer.fit(cols, 100, kind, exact="reference")
    if kind == "quantile" and share < 0.01:  # the fault: one token for both
        assert ref.discretize(np.array([[0.0, 0], [1.0, 0]]))[:, 0].tolist() == [99, 99]
    disc = Discretizer.fit(cols, 100, kind)
    tok = disc.discretize(np.array([[0.0, 0.0], [1.0, 0.0]]))
    assert tok[0, 0] != tok[1, 0]
    np.testing.assert_array_equal(disc.reconstruct(tok)[:, 0], [0.0, 1.0])
    np.testing.assert_array_equal(disc.edges[:, 1], ref.edges[:, 1])  # continuous: unchanged
    back = disc.reconstruct(disc.discretize(cols))[:, 0]
    np.testing.assert_array_equal(back, r)  # every row round-trips
    # the expectation over the reward bins is the reward itself for a one-hot distribution
    probs = np.eye(101)[tok[:, 0]]
    np.testing.assert_array_equal(disc.expectation(probs, 0), [0.0, 1.0])


def test_three_valued_and_constant_columns() -> None:
    """Each value of a few-valued column gets its own exactly decoded token (and round trips
    through torch too); a constant column, which already round-trips, keeps the reference's
    edges, as a column with more than (N+1)//2 values does under the default."""
    rng = np.random.default_rng(2)
    n = 30_000
    three = rng.choice(np.array([-1.0, 0.25, 3.0]), size=n, p=[0.005, 0.99, 0.005])
    many = rng.integers(0, 60, n).astype(np.float64)  # 60 values > 101 // 2
    cols = np.stack([three, np.full(n, 7.0), many], 1)
    disc = Discretizer.fit(cols, 100)
    ref = Discretizer.fit(cols, 100, exact="reference")
    vals = np.array([[-1.0, 7.0, 0.0], [0.25, 7.0, 0.0], [3.0, 7.0, 0.0]])
    tok = disc.discretize(vals)
    assert len(set(tok[:, 0].tolist())) == 3
    np.testing.assert_array_equal(disc.reconstruct(tok)[:, 0], vals[:, 0])
    t_tok = disc.discretize(torch.tensor(vals))
    np.testing.assert_array_equal(disc.reconstruct(t_tok)[:, 0].numpy(), vals[:, 0])
    np.testing.assert_array_equal(disc.edges[:, 1:], ref.edges[:, 1:])


def test_continuous_edges_are_the_reference_in_every_mode() -> None:
    """Continuous columns (float32 and float64, some heavy-tailed): every mode gives the
    reference's edges, so tokens keep parity with the published code."""
    rng = np.random.default_rng(3)
    data = np.concatenate(
        [rng.normal(size=(12_000, 3)), rng.standard_cauchy((12_000, 2))], 1
    ).astype(np.float32)
    for kind in ("quantile", "uniform"):
        ref = fit_edges(data, 100, kind, "reference")
        np.testing.assert_array_equal(fit_edges(data, 100, kind, "discrete"), ref)


def test_exact_bins_mode_is_checked() -> None:
    with pytest.raises(TrajplanError, match="exact"):
        Discretizer.fit(np.zeros((5, 1)), 4, exact="sometimes")


def test_exact_bins_modes_survive_a_set_override() -> None:
    """Every mode, given as `--set data.exact_bins=MODE` (parsed as YAML), stays the string
    it names: a mode called "off" would have read as the boolean False."""
    from trajplan.config import EXACT_BINS, RunConfig
    from trajplan.configs import apply_overrides

    for mode in EXACT_BINS:
        cfg = RunConfig()
        apply_overrides(cfg, [f"data.exact_bins={mode}"])
        assert cfg.data.exact_bins == mode


def test_configs_of_older_runs_still_read() -> None:
    """Runs written before 2026-12-07 record data.penalty_bin (their bins: the reference's,
    or the penalty's own) and plan.critic_form, before 2026-12-08 data.critic_weighting and
    data.critic_beta; they read as exact_bins reference, the critic's Q and no critic
    weighting, and the removed options (the penalty's own bin, the V form, a critic
    weighting) are refused in one line, from a run's config.json and from --set alike."""
    from trajplan.config import DataConfig, PlanConfig, RunConfig
    from trajplan.configs import apply_overrides
    from trajplan.configs.convert import from_dict, to_dict

    assert from_dict(DataConfig, {"penalty_bin": False}).exact_bins == "reference"
    for removed in ({"penalty_bin": True}, {"exact_bins": "atoms"}):
        with pytest.raises(TrajplanError, match="atoms .* was removed"):
            from_dict(DataConfig, removed)
    assert from_dict(DataConfig, {"goal_dims": "0,1", "goal_relabel": "final"}).goal_dims == "0,1"
    with pytest.raises(TrajplanError, match="goal_relabel future was removed"):
        from_dict(DataConfig, {"goal_relabel": "future"})
    assert from_dict(DataConfig, {}).exact_bins == "discrete"  # a new config: the default
    assert from_dict(PlanConfig, {"critic_form": "q", "horizon": 3}).horizon == 3
    with pytest.raises(TrajplanError, match="critic_form v was removed"):
        from_dict(PlanConfig, {"critic_form": "v"})
    doc = to_dict(RunConfig())  # a config.json of a run trained before 2026-12-08
    doc["data"].update(critic_weighting=None, critic_beta=None, action_weighting=2.0)
    assert from_dict(RunConfig, doc) == RunConfig(data=DataConfig(action_weighting=2.0))
    doc["data"].update(critic_weighting="/runs/iql", critic_beta=3.0, action_weighting=0.0)
    with pytest.raises(TrajplanError) as err:
        from_dict(RunConfig, doc)
    assert str(err.value).startswith(
        "data.critic_weighting was removed (no score gain measured, docs/results.md): "
    ) and "\n" not in str(err.value)
    with pytest.raises(TrajplanError, match="critic_weighting was removed"):
        apply_overrides(RunConfig(), ["data.critic_weighting=runs/iql"])
    for neutral in ("data.critic_weighting=null", "data.goal_relabel=final"):
        assert apply_overrides(RunConfig(), [neutral]) == RunConfig()  # nothing to set
    assert apply_overrides(RunConfig(), ["data.penalty_bin=false"]).data.exact_bins == "reference"
