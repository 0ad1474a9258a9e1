"""Long-horizon prediction (trajplan.prediction, `trajplan predict` / `trajplan ensemble`):
the harness scores the simulator at exactly zero error, the ensemble's one-step error falls
with training, a TT rollout is seeded, shaped right and blind to the true future, and bad
input is one line. Real fixture datasets, a real tiny TT run, real ensemble runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, one_line_error

from trajplan.data.episodes import load_episodes
from trajplan.prediction.ensemble import fit_ensemble, one_step_mse, train_ensemble
from trajplan.prediction.heldout import pick_starts, split_held_out
from trajplan.prediction.open_loop import SIGMA_MIN, TruthReplay, dim_groups, rollout, score
from trajplan.runs.ensemble import EnsembleConfig, load_ensemble

pytestmark = pytest.mark.usefixtures("minari_root")


@pytest.fixture(scope="module")
def tt_run(minari_datasets, tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    """The tiny config, 2 epochs on the HalfCheetah fixture with 1 of its 4 episodes held out."""
    from trajplan.configs import load_config
    from trajplan.training.loop import train

    cfg = load_config("tiny")
    cfg.dataset = minari_datasets.halfcheetah
    cfg.data.val_fraction = 0.25
    cfg.train.epochs = 2
    return train(cfg, tmp_path_factory.mktemp("runs") / "tt", device="cpu", progress=False)


def held_out(dataset: str, fraction: float = 0.25):
    return split_held_out(load_episodes(dataset), fraction)


def test_starts_are_the_recorded_steps(halfcheetah_dataset: str) -> None:
    _, held = held_out(halfcheetah_dataset)
    assert held.n_episodes == 1 and held.lengths[0] == 60
    starts = pick_starts(held, horizon=20, n_starts=100, seed=3)
    assert starts.n == 40  # t = 0 .. 39: every start with 20 recorded steps after it
    assert np.array_equal(starts.t, np.arange(40))
    s = pick_starts(held, horizon=20, n_starts=5, seed=3)
    assert s.obs.shape == (5, 17) and s.actions.shape == (5, 20, 6) and s.truth.shape == (5, 20, 17)
    for i, t in enumerate(s.t):
        assert np.array_equal(s.obs[i], held.observations[t])
        assert np.array_equal(s.truth[i], held.observations[t + 1 : t + 21])
        assert np.array_equal(s.actions[i], held.actions[t : t + 20])
    assert np.array_equal(pick_starts(held, 20, 5, seed=3).t, s.t)  # same seed, same starts


def test_simulator_as_the_model_gives_zero_error(halfcheetah_dataset: str) -> None:
    train, held = held_out(halfcheetah_dataset)
    starts = pick_starts(held, horizon=30, n_starts=8, seed=0)
    groups = dim_groups("halfcheetah", 17)
    assert groups["positions"] == list(range(8)) and groups["velocities"] == list(range(8, 17))
    roll = rollout(TruthReplay(starts), starts, samples=3, progress=False)
    assert roll.obs.shape == (8, 3, 30, 17)
    scale = train.observations.std(0) + 1e-6
    s = score(roll, starts, scale, groups)
    for key in ("mse_all", "mse_positions", "mse_velocities", "mse_of_mean", "reward_mse"):
        assert s[key] == [0.0] * 30, key
    # zero spread, zero error: the log-density of the Gaussian's peak at the floor SIGMA_MIN
    peak = -0.5 * np.log(2 * np.pi * SIGMA_MIN**2)
    assert np.allclose(s["loglik"], peak)
    # one step off (the truth of the next step): the error is no longer zero
    shifted = rollout(TruthReplay(starts), starts, samples=1, progress=False)
    shifted.obs[:, :, :-1] = shifted.obs[:, :, 1:]
    assert min(score(shifted, starts, scale, groups)["mse_all"][:-1]) > 0


def test_recorded_states_are_the_simulators(hopper_dataset: str) -> None:
    """The reference needs no replay: MuJoCo set to a recorded state (x, absent from the
    observation, set to 0: Hopper's dynamics do not depend on it) and stepped with the
    recorded actions reproduces the recorded next states."""
    from trajplan.envs.registry import make_env

    ep = load_episodes(hopper_dataset)
    starts = pick_starts(ep, horizon=3, n_starts=4, seed=0)
    env = make_env("hopper")
    try:
        env.reset(seed=0)
        sim = env.unwrapped
        for i in range(starts.n):
            obs = starts.obs[i].astype(np.float64)
            sim.set_state(np.concatenate([[0.0], obs[:5]]), obs[5:])
            for h in range(3):
                nxt, *_ = env.step(starts.actions[i, h])
                assert np.allclose(nxt, starts.truth[i, h], atol=1e-4), (i, h)
    finally:
        env.close()


def test_unknown_env_has_one_group() -> None:
    assert dim_groups("", 4) == {"all": [0, 1, 2, 3]}


def test_ensemble_one_step_error_falls_with_training(hopper_dataset: str, one_thread) -> None:
    train, held = held_out(hopper_dataset)
    small = dict(members=3, hidden=[32, 32], batch_size=64, log_every=100)
    before = fit_ensemble(train, held, EnsembleConfig(steps=1, **small), progress=False)
    after = fit_ensemble(train, held, EnsembleConfig(steps=600, **small), progress=False)
    mse0 = one_step_mse(before.net, before.norm, held)
    mse1 = one_step_mse(after.net, after.norm, held)
    assert mse1 < 0.5 * mse0, (mse0, mse1)
    assert after.val_mse == pytest.approx(mse1)
    lines = [json.loads(x) for x in after.lines]
    assert [x["step"] for x in lines] == [100, 200, 300, 400, 500, 600]
    assert lines[-1]["loss"] < lines[0]["loss"]  # the Gaussian NLL falls too


def test_ensemble_run_round_trip_and_seeded_rollouts(
    halfcheetah_dataset: str, tmp_path: Path, one_thread
) -> None:
    cfg = EnsembleConfig(members=2, hidden=[16], steps=30, val_fraction=0.25, log_every=10)
    run = train_ensemble(halfcheetah_dataset, tmp_path / "ens", cfg, progress=False)
    ens = load_ensemble(run)
    assert (ens.dataset_id, ens.val_fraction, ens.env) == (halfcheetah_dataset, 0.25, "halfcheetah")
    _, held = held_out(halfcheetah_dataset)
    starts = pick_starts(held, 10, 4, seed=0)
    a = rollout(ens.predictor(), starts, samples=5, seed=7, progress=False)
    b = rollout(load_ensemble(run).predictor(), starts, samples=5, seed=7, progress=False)
    c = rollout(ens.predictor(), starts, samples=5, seed=8, progress=False)
    assert a.obs.shape == (4, 5, 10, 17) and a.rewards.shape == (4, 5, 10)
    assert np.array_equal(a.obs, b.obs) and not np.array_equal(a.obs, c.obs)
    assert np.isfinite(a.obs).all()
    with pytest.raises(Exception, match="already exists"):
        train_ensemble(halfcheetah_dataset, run, cfg, progress=False)


def test_tt_rollout_is_seeded_shaped_and_blind_to_the_future(
    tt_run: Path, halfcheetah_dataset: str
) -> None:
    from trajplan.prediction.tt import TTPredictor
    from trajplan.runs.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tt_run, device="cpu")
    model = TTPredictor(ckpt.model, ckpt.discretizer, ckpt.model.pos_emb.device)
    _, held = held_out(halfcheetah_dataset)
    starts = pick_starts(held, horizon=6, n_starts=3, seed=0)
    a = rollout(model, starts, samples=4, seed=0, progress=False)
    assert a.obs.shape == (3, 4, 6, 17) and a.rewards.shape == (3, 4, 6)
    b = rollout(model, starts, samples=4, seed=0, progress=False)
    assert np.array_equal(a.obs, b.obs) and np.array_equal(a.rewards, b.rewards)
    assert not np.array_equal(a.obs, rollout(model, starts, 4, seed=1, progress=False).obs)
    mids = ckpt.discretizer.midpoints()[:, :17]  # every predicted value is a bin's midpoint
    assert all(np.isin(a.obs[..., d], mids[:, d]).all() for d in range(17))
    starts.truth[:] = 0.0  # the true future is never read
    starts.rewards[:] = 0.0
    assert np.array_equal(rollout(model, starts, 4, seed=0, progress=False).obs, a.obs)


def test_predict_cli_writes_the_report(
    tt_run: Path, halfcheetah_dataset: str, tmp_path: Path, one_thread
) -> None:
    ens = tmp_path / "ens"
    cli("ensemble", "--dataset", halfcheetah_dataset, "--out", ens, "--steps", "20",
        "--hidden", "16", "--members", "2", "--val-fraction", "0.25", "--no-progress")  # fmt: skip
    out = tmp_path / "pred"
    res = cli("predict", tt_run, "--ensemble", ens, "--horizon", "12", "--starts", "4",
              "--samples", "2", "--out", out, "--no-progress", "--threads", "1")  # fmt: skip
    steps = [ln.split(":")[0] for ln in res.stdout.splitlines() if ln.startswith("step ")]
    assert steps == ["step 1", "step 10", "step 12"] and "ensemble mse" in res.stdout
    report = json.loads((out / "predict.json").read_text())
    assert set(report["models"]) == {"simulator", "tt", "ensemble"}
    assert report["models"]["simulator"]["mse_all"] == [0.0] * 12
    assert len(report["models"]["tt"]["mse_velocities"]) == 12
    assert len(report["data_mean_mse"]) == 12 and min(report["data_mean_mse"]) > 0
    assert report["starts"] == 4 and "validation split" in report["held_out"]
    assert set(report["summary"]) >= {"tt_mse_at_10", "ensemble_mse_at_10", "tt_loglik_at_1"}
    assert (out / "predict.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (out / "predict.svg").read_bytes()[:2000]


def test_predict_bad_input_is_one_line(
    tt_run: Path, tiny_run: Path, halfcheetah_dataset: str, hopper_dataset: str, tmp_path: Path
) -> None:
    out = tmp_path / "p"
    one_line_error(cli("predict", tt_run, "--horizon", "60", "--out", out, code=None),
                   "--horizon 60", "longest has 60 steps", "--horizon 59 at most")  # fmt: skip
    one_line_error(cli("predict", tiny_run, "--out", out, code=None), "val_fraction", "--dataset")
    ens = tmp_path / "ens"
    train_ensemble(hopper_dataset, ens, EnsembleConfig(hidden=[8], steps=2), progress=False)
    one_line_error(cli("predict", ens, "--out", out, code=None), "ensemble run, not a TT run")
    one_line_error(cli("predict", tt_run, "--ensemble", ens, "--out", out, code=None),
                   "trained on", hopper_dataset)  # fmt: skip
    from trajplan.baselines.bc import BCConfig, train_bc

    bc = train_bc(
        halfcheetah_dataset, tmp_path / "bc", BCConfig(hidden=[8], steps=2), progress=False
    )
    one_line_error(cli("predict", bc, "--out", out, code=None), "BC run", "needs a TT run")
    one_line_error(cli("predict", tmp_path / "nothing", "--out", out, code=None))
    assert not out.exists() or not any(out.iterdir())  # nothing half-written
