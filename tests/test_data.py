"""Data pipeline: hand-computed values and windows, real Minari datasets, bad input, CLI."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import torch
from conftest import cli, one_line_error

from trajplan.config import DataConfig
from trajplan.data.store import split_dataset_ids
from trajplan.data.transitions import (
    Episodes,
    create_dataset,
    dataset_info,
    download_dataset,
    load_episodes,
    local_datasets,
    make_transitions,
    penalized_rewards,
    prepare,
    prepare_episodes,
    value_targets,
)
from trajplan.envs.references import D4RL_SOURCE, METADATA_SOURCE
from trajplan.envs.registry import resolve_env
from trajplan.errors import TrajplanError


def tiny_episodes() -> Episodes:
    """Two hand-written episodes (obs 1 dim, act 1 dim): 3 steps ending in a termination,
    then 4 steps ending in a truncation."""
    obs = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0], [13.0]], dtype=np.float32)
    act = np.array([[-1.0], [-2.0], [-3.0], [5.0], [6.0], [7.0], [8.0]], dtype=np.float32)
    return Episodes(
        observations=obs,
        actions=act,
        rewards=np.array([1, 2, 3, 1, 1, 1, 1], dtype=np.float32),
        terminations=np.array([0, 0, 1, 0, 0, 0, 0], dtype=bool),
        truncations=np.array([0, 0, 0, 0, 0, 0, 1], dtype=bool),
        starts=np.array([0, 3], dtype=np.int64),
        lengths=np.array([3, 4], dtype=np.int64),
        dataset_id="hand",
    )


def random_episodes(lengths: list[int], seed: int = 0, o: int = 2, a: int = 1) -> Episodes:
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    term = np.zeros(n, bool)
    term[np.cumsum(lengths)[::2] - 1] = True  # every other episode terminates
    return Episodes(
        observations=rng.standard_normal((n, o)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, a)).astype(np.float32),
        rewards=rng.standard_normal(n).astype(np.float32),
        terminations=term,
        truncations=~term & np.isin(np.arange(n), np.cumsum(lengths) - 1),
        starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        lengths=np.array(lengths, dtype=np.int64),
        dataset_id="random",
    )


# -- hand-computed values -----------------------------------------------------------------------


def test_penalty_and_values_by_hand() -> None:
    ep = tiny_episodes()
    r = penalized_rewards(ep.rewards, ep.terminations, -10.0)
    np.testing.assert_array_equal(r, [1, 2, -10, 1, 1, 1, 1])  # truncation: no penalty
    np.testing.assert_array_equal(penalized_rewards(ep.rewards, ep.terminations, None), ep.rewards)
    v = value_targets(r, ep.starts, ep.lengths, 0.5)
    # V_t = r_{t+1} + 0.5 r_{t+2} + ...: episode 0 -> [2 + 0.5 * -10, -10, 0]
    np.testing.assert_allclose(v, [-3.0, -10.0, 0.0, 1.75, 1.5, 1.0, 0.0])

    cfg = DataConfig(discount=0.5, termination_penalty=-10.0)
    trans = make_transitions(ep, cfg)
    assert trans.dtype == np.float32 and trans.shape == (7, 4)
    np.testing.assert_array_equal(trans[:, 0], ep.observations[:, 0])
    np.testing.assert_array_equal(trans[:, 1], ep.actions[:, 0])
    np.testing.assert_array_equal(trans[:, 2], r)
    np.testing.assert_allclose(trans[:, 3], v)


def test_value_targets_equal_a_direct_sum() -> None:
    lengths = [1, 7, 3, 12, 2, 12]
    ep = random_episodes(lengths, seed=1)
    got = value_targets(ep.rewards, ep.starts, ep.lengths, 0.9)
    r = ep.rewards.astype(np.float64)
    want = np.zeros(ep.n_steps)
    for s, n in zip(ep.starts, ep.lengths, strict=True):
        for t in range(n):
            want[s + t] = sum(0.9 ** (k - 1) * r[s + t + k] for k in range(1, n - t))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def reference_window(
    step_tokens: np.ndarray, ep: Episodes, e: int, j: int, L: int, max_path_length: int, stop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """docs/method.md (Data) written out for one window: episode e, first step j."""
    d = step_tokens.shape[1]
    win = np.full((L, d), stop, dtype=np.int64)
    mask = np.ones((L, d))
    for k in range(L):
        t = j + k
        if t < ep.lengths[e]:
            win[k] = step_tokens[ep.starts[e] + t]
        if t > max_path_length - 1:
            mask[k] = 0
    flat, mask = win.reshape(-1), mask.reshape(-1)
    return flat[:-1], flat[1:], mask[:-1]


def test_windows_by_hand() -> None:
    ep = tiny_episodes()
    cfg = DataConfig(seq_len=3, n_bins=4, max_path_length=2, discount=0.5)
    data = prepare_episodes(ep, cfg)
    w = data.windows
    assert (w.n_windows, len(w)) == (2 + 3, 5)  # starts 0..len-2 of each episode
    assert (w.seq_len, w.transition_dim, w.block_size) == (3, 4, 11)
    x, y, mask = w.get_batch(torch.arange(5))
    assert x.shape == y.shape == mask.shape == (5, 11)
    assert x.dtype == y.dtype == torch.long and mask.dtype == torch.float32

    tok = data.discretizer.discretize(data.transitions)
    # window 1 = episode 0 from step 1: steps 1, 2 then one stop transition (token N = 4)
    seq = np.concatenate([tok[1], tok[2], [4, 4, 4, 4]])
    np.testing.assert_array_equal(x[1].numpy(), seq[:-1])
    np.testing.assert_array_equal(y[1].numpy(), seq[1:])
    # max_path_length 2: time indices 1, 2, 3 -> mask 1, 0, 0 (following the input token)
    np.testing.assert_array_equal(mask[1].numpy(), [1] * 4 + [0] * 7)
    # window 4 = episode 1 from step 2: steps 2, 3, then stop; never episode 0's tokens
    seq = np.concatenate([tok[5], tok[6], [4, 4, 4, 4]])
    np.testing.assert_array_equal(x[4].numpy(), seq[:-1])
    np.testing.assert_array_equal(mask[4].numpy(), 0)  # time 2, 3, 4 > max_path_length - 1
    np.testing.assert_array_equal(mask[2].numpy(), [1] * 8 + [0] * 3)  # episode 1, step 0
    np.testing.assert_array_equal(w.episode_index, [0, 0, 1, 1, 1])


@pytest.mark.parametrize("seq_len,max_path_length", [(1, 1000), (4, 5), (10, 1000)])
def test_every_window_matches_the_spec(seq_len: int, max_path_length: int) -> None:
    ep = random_episodes([1, 2, 9, 5, 14, 3], seed=2)
    cfg = DataConfig(seq_len=seq_len, n_bins=7, max_path_length=max_path_length)
    data = prepare_episodes(ep, cfg)
    tok = data.discretizer.discretize(data.transitions)
    w = data.windows
    assert w.n_windows == sum(int(n) - 1 for n in ep.lengths)
    order = torch.randperm(w.n_windows, generator=torch.Generator().manual_seed(0))
    x, y, mask = w.get_batch(order)
    pairs = [(e, j) for e, n in enumerate(ep.lengths) for j in range(n - 1)]
    for row, i in enumerate(order.tolist()):
        e, j = pairs[i]
        rx, ry, rm = reference_window(tok, ep, e, j, seq_len, max_path_length, 7)
        np.testing.assert_array_equal(x[row].numpy(), rx)
        np.testing.assert_array_equal(y[row].numpy(), ry)
        np.testing.assert_array_equal(mask[row].numpy(), rm)


def test_window_dataset_to_device_and_numpy_index() -> None:
    data = prepare_episodes(random_episodes([6, 4]), DataConfig(seq_len=2, n_bins=5))
    w = data.windows.to("cpu")
    assert w.tokens.dtype == torch.int16
    a = w.get_batch(torch.tensor([0, 3]))
    b = w.get_batch(np.array([0, 3]))
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)


# -- real Minari datasets ---------------------------------------------------------------------


def test_round_trip_equals_what_was_written(minari_datasets) -> None:
    for dataset_id, episodes in minari_datasets.written.items():
        ep = load_episodes(dataset_id)
        assert ep.n_episodes == len(episodes)
        np.testing.assert_array_equal(ep.lengths, [len(e["rewards"]) for e in episodes])
        np.testing.assert_array_equal(ep.starts, np.cumsum([0, *ep.lengths[:-1]]))
        for i, e in enumerate(episodes):
            rows = slice(ep.starts[i], ep.starts[i] + ep.lengths[i])
            np.testing.assert_array_equal(
                ep.observations[rows], e["observations"][:-1].astype(np.float32)
            )
            np.testing.assert_array_equal(ep.actions[rows], e["actions"].astype(np.float32))
            np.testing.assert_array_equal(ep.rewards[rows], e["rewards"].astype(np.float32))
            np.testing.assert_array_equal(ep.terminations[rows], e["terminations"])
            np.testing.assert_array_equal(ep.truncations[rows], e["truncations"])
        with h5py.File(minari_datasets.root / dataset_id / "data" / "main_data.hdf5") as f:
            seeds = [int(f[f"episode_{i}"].attrs["seed"]) for i in range(len(episodes))]
        assert seeds == minari_datasets.seeds[dataset_id]


def test_fixture_datasets_have_the_intended_shape(minari_datasets) -> None:
    halfcheetah_dataset, hopper_dataset = minari_datasets.halfcheetah, minari_datasets.hopper
    hc = load_episodes(halfcheetah_dataset)
    assert (hc.obs_dim, hc.act_dim, hc.env_id) == (17, 6, "HalfCheetah-v5")
    assert not hc.terminations.any() and hc.truncations.sum() == hc.n_episodes
    refs = minari_datasets.refs[halfcheetah_dataset]
    assert (hc.ref_min, hc.ref_max, hc.ref_source) == (*refs, METADATA_SOURCE)

    hop = load_episodes(hopper_dataset)
    assert (hop.obs_dim, hop.act_dim, hop.env_id) == (11, 3, "Hopper-v5")
    assert hop.terminations.sum() >= hop.n_episodes // 2  # random actions fall over
    assert hop.ref_source == D4RL_SOURCE
    assert (hop.ref_min, hop.ref_max) == (resolve_env("hopper").ref_min, 3234.3)
    np.testing.assert_array_equal(
        hop.terminations | hop.truncations,
        np.isin(np.arange(hop.n_steps), hop.starts + hop.lengths - 1),
    )


def test_prepare_on_real_data(hopper_dataset) -> None:
    cfg = DataConfig()
    data = prepare(hopper_dataset, cfg)
    ep = data.episodes
    assert (data.obs_dim, data.act_dim, data.transition_dim) == (11, 3, 16)
    assert data.windows.n_windows == int((ep.lengths - 1).sum())
    assert data.windows.block_size == 10 * 16 - 1
    term_rows = np.flatnonzero(ep.terminations)
    np.testing.assert_array_equal(data.transitions[term_rows, 14], -100.0)
    last = ep.starts + ep.lengths - 1
    np.testing.assert_array_equal(data.transitions[last, 15], 0.0)  # no bootstrap
    x, y, mask = data.windows.get_batch(torch.arange(data.windows.n_windows))
    assert int(x.max()) == cfg.n_bins and int(x.min()) >= 0  # stop tokens present
    assert mask.min() == 1.0  # all episodes shorter than max_path_length


def test_exact_bins_on_real_data(hopper_dataset) -> None:
    """On continuous MuJoCo data the default exact bins ("discrete") are the reference's
    edges, the terminations' -100 rewards included (with or without the penalty)."""
    ref = prepare(hopper_dataset, DataConfig(exact_bins="reference")).discretizer
    np.testing.assert_array_equal(
        prepare(hopper_dataset, DataConfig()).discretizer.edges, ref.edges
    )
    no_penalty = DataConfig(termination_penalty=None)
    ref_np = prepare(hopper_dataset, dataclasses.replace(no_penalty, exact_bins="reference"))
    np.testing.assert_array_equal(
        prepare(hopper_dataset, no_penalty).discretizer.edges, ref_np.discretizer.edges
    )


def test_obs_keep(hopper_dataset) -> None:
    assert load_episodes(hopper_dataset, obs_keep=5).obs_dim == 5
    assert load_episodes(hopper_dataset, obs_keep=0).obs_dim == 11
    with pytest.raises(TrajplanError, match="obs_keep"):
        load_episodes(hopper_dataset, obs_keep=12)


def test_combined_datasets(hopper_dataset, halfcheetah_dataset) -> None:
    one = load_episodes(hopper_dataset)
    both = load_episodes(f"{hopper_dataset}+{hopper_dataset}")
    assert both.n_episodes == 2 * one.n_episodes
    np.testing.assert_array_equal(both.observations[one.n_steps :], one.observations)
    np.testing.assert_array_equal(both.starts[one.n_episodes :], one.starts + one.n_steps)
    with pytest.raises(TrajplanError, match="different dimensions"):
        load_episodes(f"{halfcheetah_dataset}+{hopper_dataset}")


def test_medium_expert_alias(minari_root) -> None:
    assert split_dataset_ids("mujoco/hopper/medium-expert-v0") == [
        "mujoco/hopper/medium-v0",
        "mujoco/hopper/expert-v0",
    ]
    assert split_dataset_ids("a1/b-v1+c1/d-v2") == ["a1/b-v1", "c1/d-v2"]


def test_list_and_info(minari_datasets) -> None:
    halfcheetah_dataset, hopper_dataset = minari_datasets.halfcheetah, minari_datasets.hopper
    rows = {r["id"]: r for r in local_datasets()}
    hc = rows[halfcheetah_dataset]
    assert (hc["episodes"], hc["steps"], hc["env"]) == (4, 240, "HalfCheetah-v5")
    assert (hc["ref_min"], hc["ref_max"]) == minari_datasets.refs[halfcheetah_dataset]
    assert rows[hopper_dataset]["ref_source"] == D4RL_SOURCE
    info = dataset_info(hopper_dataset)
    assert (info["obs_dim"], info["act_dim"], info["env"], info["eval_env"]) == (
        11,
        3,
        "Hopper-v5",
        "Hopper-v5",
    )
    assert info["algorithm"] == "random" and "Hopper-v5" in info["description"]


# -- writing datasets -------------------------------------------------------------------------


def test_create_refuses_existing_and_force_replaces(tmp_path, monkeypatch, minari_datasets):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    episodes = minari_datasets.written[minari_datasets.hopper][:2]
    create_dataset("mine/hopper/a-v0", episodes, "hopper")
    with pytest.raises(TrajplanError, match="already exists"):
        create_dataset("mine/hopper/a-v0", episodes[:1], "hopper")
    create_dataset("mine/hopper/a-v0", episodes[:1], "hopper", force=True)
    assert load_episodes("mine/hopper/a-v0").n_episodes == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_failed_create_leaves_nothing(tmp_path, monkeypatch, minari_datasets) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    episodes = minari_datasets.written[minari_datasets.hopper][:2]
    # fails inside Minari, after it has started writing (metadata is not JSON-serialisable)
    with pytest.raises(TrajplanError, match="cannot write"):
        create_dataset("mine/hopper/b-v0", episodes, "hopper", algorithm_name=object())
    assert not (tmp_path / "mine" / "hopper" / "b-v0").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    bad = [dict(episodes[0], observations=episodes[0]["observations"][:-1])]
    with pytest.raises(TrajplanError, match="T\\+1 rows"):
        create_dataset("mine/hopper/c-v0", bad, "hopper")
    nan = [dict(episodes[0], rewards=episodes[0]["rewards"] * np.nan)]
    with pytest.raises(TrajplanError, match="NaN"):
        create_dataset("mine/hopper/c-v0", nan, "hopper")
    with pytest.raises(TrajplanError, match="both"):
        create_dataset("mine/hopper/c-v0", episodes, "hopper", ref_max=1.0)
    with pytest.raises(TrajplanError, match="without episodes"):
        create_dataset("mine/hopper/c-v0", [], "hopper")
    assert not (tmp_path / "mine" / "hopper" / "c-v0").exists()


# -- bad input --------------------------------------------------------------------------------


def write_raw(dataset_id: str, episodes: list[dict]) -> None:
    """Bypass create_dataset's checks: write straight through Minari."""
    import warnings

    import minari
    from minari.data_collector import EpisodeBuffer

    buffers = [EpisodeBuffer(**e) for e in episodes]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(dataset_id, buffers, env="Hopper-v5")


def test_bad_datasets(tmp_path, monkeypatch, minari_datasets) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(TrajplanError, match="trajplan data download"):
        load_episodes("nowhere/hopper/medium-v0")
    with pytest.raises(TrajplanError, match="malformed dataset id"):
        load_episodes("no-version")
    write_raw("bad/hopper/empty-v0", [])
    with pytest.raises(TrajplanError, match="empty"):
        load_episodes("bad/hopper/empty-v0")
    good = minari_datasets.written[minari_datasets.hopper][0]
    for key, bad_value in (("observations", np.inf), ("actions", np.nan), ("rewards", np.nan)):
        e = {k: np.array(v) for k, v in good.items()}
        e[key][1] = bad_value
        write_raw(f"bad/hopper/{key}-v0", [e])
        with pytest.raises(TrajplanError, match="NaN or inf"):
            load_episodes(f"bad/hopper/{key}-v0")


def test_bad_config_and_env() -> None:
    with pytest.raises(TrajplanError, match="unknown env"):
        resolve_env("no-such-env")
    with pytest.raises(TrajplanError, match="seq_len"):
        prepare_episodes(tiny_episodes(), DataConfig(seq_len=0))
    with pytest.raises(TrajplanError, match="discount"):
        prepare_episodes(tiny_episodes(), DataConfig(discount=1.5))
    one_step = random_episodes([1, 1])
    with pytest.raises(TrajplanError, match="no training windows"):
        prepare_episodes(one_step, DataConfig())


def test_download_fails_with_one_line(tmp_path, monkeypatch) -> None:
    # No network here (and possibly no huggingface_hub): either way a one-line TrajplanError.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(TrajplanError) as err:
        download_dataset("mujoco/hopper/medium-v0")
    assert "\n" not in str(err.value)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_unreachable_remote_is_one_line_at_once(tmp_path, monkeypatch) -> None:
    """A remote that refuses the connection (HF_ENDPOINT on a closed local port) is named in
    one line before the hub's client retries; a dataset already here needs no remote."""
    import socket

    with socket.socket() as s:  # a port nothing listens on: bound, then closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(TrajplanError, match=f"cannot reach Minari's remote 127.0.0.1:{port}"):
        download_dataset("mujoco/hopper/medium-v0")
    (tmp_path / "mujoco/hopper/medium-v0").mkdir(parents=True)
    assert download_dataset("mujoco/hopper/medium-v0") == [tmp_path / "mujoco/hopper/medium-v0"]


# -- CLI --------------------------------------------------------------------------------------


def test_cli_list_info_and_errors(halfcheetah_dataset, hopper_dataset) -> None:
    out = cli("data", "list", process=True)  # the real entry point, in a child process
    assert halfcheetah_dataset in out.stdout and hopper_dataset in out.stdout
    out = cli("data", "info", hopper_dataset, process=True)
    assert "Hopper-v5" in out.stdout and "D4RL" in out.stdout
    out = cli("data", "info", "missing/hopper/medium-v0", process=True, code=2)
    one_line_error(out, "trajplan data download")
    one_line_error(cli("data", "info", "no-version", code=2))  # in-process: the same
    out = cli("data", "download", "--help", process=True)
    assert "hub" in out.stdout


SPARSE_ID = "test/hopper/sparse-v0"


@pytest.fixture(scope="module")
def sparse_hopper(minari_datasets) -> str:
    """The Hopper fixture's episodes with a sparse 0/1 reward: 4 goals in ~600 steps."""
    from trajplan.data.transitions import create_dataset

    episodes = [dict(e) for e in minari_datasets.written[minari_datasets.hopper]]
    n = sum(len(e["rewards"]) for e in episodes)
    flat = np.zeros(n)
    flat[:: n // 3] = 1.0
    at = 0
    for e in episodes:
        e["rewards"] = flat[at : at + len(e["rewards"])].copy()
        at += len(e["rewards"])
    create_dataset(SPARSE_ID, episodes, "Hopper-v5", algorithm_name="test")
    return SPARSE_ID


def test_data_info_shows_how_the_bins_keep_each_column(sparse_hopper: str) -> None:
    """`data info` fits the bins and lists every column's distinct values, tokens and
    round-trip error: a sparse 0/1 reward (4 goals in ~600 steps) is flagged "merged" under
    the reference's bins and kept exact (error 0) by the default."""

    def reward_row(*opts: str) -> list[str]:
        out = cli("data", "info", "test/hopper/sparse-v0", "--n-bins", "20", *opts).stdout
        rows = [[c.strip() for c in ln.split("│")[1:-1]] for ln in out.splitlines() if "│" in ln]
        return next(r for r in rows if r[0] == "reward")

    # 0, 1 and the termination penalty -100 of the falls: three values, three exact tokens
    assert reward_row() == ["reward", "3", "3", "0", "0", ""]
    off = reward_row("--exact-bins", "reference")
    assert off[1] == "3" and int(off[2]) < 3 and float(off[3]) > 0 and off[5] == "merged"
    one_line_error(
        cli("data", "info", "test/hopper/sparse-v0", "--exact-bins", "some", code=2),
        "exact_bins",
    )


def test_diag_rewards_reads_a_runs_reward_predictions(sparse_hopper: str, tmp_path) -> None:
    """scripts/diag_rewards.py on a real run: its JSON line names the run's bins and sets the
    model's expected reward at the data's rewarded steps against elsewhere; the data's side
    is exact (1.0 at the goals, 0.0 or the penalty elsewhere); a bad --windows is one line."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "tt"
    cli("train", "--config", "tiny", "--dataset", sparse_hopper, "--max-steps", "20",
        "--threads", "1", "--no-progress", "--out", str(run))  # fmt: skip
    script = Path(__file__).parents[1] / "scripts" / "diag_rewards.py"
    proc = subprocess.run([sys.executable, str(script), "--run", str(run), "--windows", "500"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout.splitlines()[-1])["runs"][0]
    assert row["exact_bins"] == "discrete" and row["true_at_reward"] == 1.0
    assert 1 <= row["rewarded_steps"] <= 4 and row["windows"] <= 500
    assert -1.0 <= row["reward_corr"] <= 1.0
    bad = subprocess.run([sys.executable, str(script), "--run", str(run), "--windows", "5"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--windows" in bad.stderr
