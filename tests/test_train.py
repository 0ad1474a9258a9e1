"""The trainer: optimizer groups, schedule, overfitting, exact resume, DDP, bad input, CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cli, one_line_error, tiny_model

from trajplan.config import RunConfig, TrainConfig
from trajplan.configs import config_for, config_names, load_config
from trajplan.errors import TrajplanError
from trajplan.model.gpt import TrajectoryGPT
from trajplan.runs.checkpoint import load_checkpoint, read_manifest
from trajplan.training.loop import Trainer, train
from trajplan.training.optim import LRSchedule, decay_parameter_names, n_epochs_for
from trajplan.training.prepare import DistInfo

TINY = "tiny"  # a shipped config, by name
VENV_BIN = Path(sys.executable).parent


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(dataset: str, **train: object) -> RunConfig:
    cfg = load_config(TINY)
    cfg.dataset = dataset
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


def weights(run_dir: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / name))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# -- optimizer, schedule, epochs ---------------------------------------------------------------


def test_weight_decay_groups() -> None:
    """Decay: every Linear weight and the per-dimension head; nothing else."""
    model = tiny_model(vocab_size=5, transitions=2, n_layer=4)
    decay, no_decay = decay_parameter_names(model)
    linear = {f"blocks.{i}.{m}.weight" for i in range(4) for m in ("attn.qkv", "attn.proj")}
    linear |= {f"blocks.{i}.mlp.{m}.weight" for i in range(4) for m in ("fc", "proj")}
    assert set(decay) == linear | {"head"}
    assert {"tok_emb.weight", "pos_emb", "ln_f.weight", "ln_f.bias"} <= set(no_decay)
    assert sorted(decay + no_decay) == sorted(n for n, _ in model.named_parameters())
    for name in no_decay:  # biases, LayerNorms, the two embeddings
        assert (
            name.endswith("bias")
            or ".ln" in name
            or name in ("ln_f.weight", "pos_emb", "tok_emb.weight")
        ), name


def test_lr_schedule_by_hand() -> None:
    """Warmup over one pass, cosine to 0.1x at 20 passes, unclamped rise after.

    docs/method.md, Optimizer and schedule.
    """
    s = LRSchedule(lr=6e-4, warmup_tokens=1000.0, final_tokens=20_000.0)
    assert s(0) == 0.0
    assert s(250) == pytest.approx(6e-4 * 0.25)
    assert s(1000) == pytest.approx(6e-4)  # progress 0: cos(0) = 1
    mid = 1000 + 19_000 / 2  # progress 0.5: 0.5 * (1 + cos(pi/2)) = 0.5
    assert s(mid) == pytest.approx(3e-4)
    near_end = 1000 + 19_000 * 0.9  # 0.5 * (1 + cos(0.9 pi)) = 0.0245 -> floor 0.1
    assert s.multiplier(near_end) == pytest.approx(0.1)
    # unclamped: progress 2 -> cos(2 pi) = 1, the rate is back at the peak
    assert s.multiplier(1000 + 19_000 * 2) == pytest.approx(1.0)
    assert s.multiplier(1000 + 19_000 * 1.5) == pytest.approx(0.5)
    clamped = LRSchedule(6e-4, 1000.0, 20_000.0, clamp=True)
    assert clamped.multiplier(1000 + 19_000 * 2) == pytest.approx(0.1)
    for t in (0, 500, 5000, 30_000):
        assert clamped(t) == pytest.approx(s(t)) or t > 20_000
    one = LRSchedule.for_data(TrainConfig(), n_windows=10, block_size=249)
    assert (one.warmup_tokens, one.final_tokens) == (2490, 20 * 2490)


def test_fitted_schedule_ends_with_the_run() -> None:
    """fit_schedule: the cosine spans the run, shorter or longer than final_mult epochs."""
    s = LRSchedule(lr=1e-3, warmup_tokens=100.0, final_tokens=2000.0, clamp=True)
    assert s.fitted(schedule_steps=20, run_steps=20) is s  # run == schedule: unchanged
    short = s.fitted(schedule_steps=20, run_steps=10)  # cut at half, or half the epochs
    assert (short.warmup_tokens, short.final_tokens) == (50.0, 1000.0)
    long = s.fitted(schedule_steps=20, run_steps=40)  # --epochs 4 with final_mult 2
    assert (long.warmup_tokens, long.final_tokens) == (200.0, 4000.0)
    assert s.multiplier(2000) == pytest.approx(0.1)  # the unfitted cosine is done at 2000
    assert long.multiplier(2000) == pytest.approx(0.5 * (1 + math.cos(math.pi * 1800 / 3800)))
    assert long.multiplier(4000) == pytest.approx(0.1) and long.clamp
    unclamped = LRSchedule(1e-3, 100.0, 2000.0).fitted(20, 40)
    assert unclamped.multiplier(8000) == pytest.approx(0.1)  # a fitted schedule never rises


def test_epoch_rule() -> None:
    assert n_epochs_for(TrainConfig(), 998_000) == 50  # int(1e6 / 998000 * 50)
    assert n_epochs_for(TrainConfig(), 236) == int(1e6 / 236 * 50)
    assert n_epochs_for(TrainConfig(n_epochs_ref=80), 1_000_000) == 80
    assert n_epochs_for(TrainConfig(epochs=3), 236) == 3


def test_first_update_runs_at_full_rate(halfcheetah_dataset: str, tmp_path: Path) -> None:
    """Step 1 uses lr 6e-4 (the reference sets the schedule after the step), then the rate
    follows the tokens seen: tiny after one step of warmup."""
    cfg = tiny_cfg(halfcheetah_dataset, lr=6e-4, max_steps=1)
    cpu = torch.device("cpu")
    trainer = Trainer.setup(cfg, tmp_path / "run", False, cpu, None, False, "runs", DistInfo())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.run(progress=False)
    # AdamW's first step moves every parameter with a gradient by lr * sign(grad) (+ decay)
    delta = (trainer.model.ln_f.bias - before["ln_f.bias"]).abs()
    assert torch.allclose(delta, torch.full_like(delta, 6e-4), rtol=1e-3)
    lr_now = trainer.optimizer.param_groups[0]["lr"]
    assert lr_now == pytest.approx(trainer.schedule(trainer.state.tokens))
    warmup = trainer.windows.n_windows * trainer.windows.block_size
    assert 0 < trainer.state.tokens < warmup and lr_now < 6e-4 / 2
    # tokens: non-stop targets of the batch (HalfCheetah windows end inside episodes)
    assert trainer.state.tokens <= cfg.train.batch_size * trainer.windows.block_size


def test_callbacks_see_every_metrics_line_and_step(halfcheetah_dataset: str, tmp_path: Path):
    """A callback given to run() gets what metrics.jsonl gets, and every step, in order."""
    from trajplan.training.callbacks import Callback

    class Recorder(Callback):
        def __init__(self) -> None:
            self.records: list[dict] = []
            self.steps: list[int] = []
            self.closed = False

        def on_record(self, record: dict) -> None:
            self.records.append(record)

        def on_step(self, step: int) -> None:
            self.steps.append(step)

        def close(self) -> None:
            self.closed = True

    cfg = tiny_cfg(halfcheetah_dataset, max_steps=6, log_every=2)
    cpu = torch.device("cpu")
    trainer = Trainer.setup(cfg, tmp_path / "run", False, cpu, None, False, "runs", DistInfo())
    rec = Recorder()
    trainer.run(progress=False, callbacks=[rec])
    assert rec.steps == [1, 2, 3, 4, 5, 6] and rec.closed and trainer.callbacks == []
    written = metrics(tmp_path / "run")
    assert rec.records == written
    assert [m["step"] for m in written if m["kind"] == "train"] == [2, 4, 6]


# -- training ----------------------------------------------------------------------------------


def test_tiny_model_overfits_one_episode(minari_datasets, tmp_path: Path) -> None:
    """59 windows, no dropout: the loss falls far below its start (5.2 -> ~0.6)."""
    from trajplan.data.transitions import Episodes, load_episodes, prepare_episodes

    ep = load_episodes(minari_datasets.halfcheetah)
    n = int(ep.lengths[0])
    one = Episodes(
        ep.observations[:n],
        ep.actions[:n],
        ep.rewards[:n],
        ep.terminations[:n],
        ep.truncations[:n],
        ep.starts[:1],
        ep.lengths[:1],
        ep.dataset_id,
        ep.env_id,
    )
    cfg = tiny_cfg(ep.dataset_id, epochs=100, log_every=5)
    cfg.model.dropout = 0.0
    run = train(cfg, tmp_path / "run", data=prepare_episodes(one, cfg.data), progress=False)
    losses = [m["loss"] for m in metrics(run) if m["kind"] == "train"]
    assert losses[0] > 4.5  # ~ weighted log(21) at init
    assert losses[-1] < 0.25 * losses[0]
    doc = read_manifest(run)[1]
    assert doc["status"] == "finished" and doc["step"] == 100 and doc["n_windows"] == 59


def test_run_directory_contents(tiny_run: Path) -> None:
    cfg, doc = read_manifest(tiny_run)
    names = {p.name for p in tiny_run.iterdir()}
    assert names == {
        "config.json",
        "model.safetensors",
        "best.safetensors",
        "discretizer.safetensors",
        "state.pt",
        "metrics.jsonl",
        ".lock",  # the run directory's lock (trajplan.runtime.DirLock), kept for reuse
    }
    assert doc["status"] == "finished" and doc["step"] == 40 and doc["epoch"] == 10
    assert doc["env"] == "halfcheetah" and doc["env_id"] == "HalfCheetah-v5"
    assert (doc["ref_min"], doc["ref_max"], doc["ref_source"]) == (
        -300.0,
        12000.0,
        "dataset metadata",
    )
    assert (cfg.model.obs_dim, cfg.model.act_dim, cfg.model.vocab_size) == (17, 6, 20)
    assert cfg.model.block_size == 3 * 25 - 1
    assert doc["n_params"] == TrajectoryGPT(cfg.model).num_params()
    lines = metrics(tiny_run)
    epochs = [m for m in lines if m["kind"] == "epoch"]
    assert [m["epoch"] for m in epochs] == list(range(10))
    assert doc["best_loss"] == min(m["loss"] for m in epochs)
    steps = [m["step"] for m in lines if m["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 40
    assert all(m["tokens_per_s"] > 0 and m["lr"] > 0 for m in lines if m["kind"] == "train")


def test_resume_is_exact(halfcheetah_dataset: str, tmp_path: Path) -> None:
    """6 steps straight == 3 steps + resume to 6 (mid-epoch stop, dropout on)."""
    cfg = tiny_cfg(halfcheetah_dataset, max_steps=6, log_every=1)
    assert cfg.model.dropout > 0
    straight = train(cfg, tmp_path / "straight", progress=False)
    first = train(
        tiny_cfg(halfcheetah_dataset, max_steps=3, log_every=1), tmp_path / "split", progress=False
    )
    assert read_manifest(first)[1]["step"] == 3
    resumed = train(cfg, first, resume=True, progress=False)
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sa, sb = read_manifest(straight)[1], read_manifest(resumed)[1]
    assert (sa["step"], sa["tokens"], sa["epoch"]) == (sb["step"], sb["tokens"], sb["epoch"])
    drop = ("tokens_per_s", "wall_s")
    clean = [
        [{k: v for k, v in m.items() if k not in drop} for m in metrics(r)]
        for r in (straight, resumed)
    ]
    assert clean[0] == clean[1]
    # a finished run resumed without a new limit has nothing to do and changes nothing
    before = weights(resumed)
    train(cfg, resumed, resume=True, progress=False)
    assert all(torch.equal(before[k], v) for k, v in weights(resumed).items())


def test_ddp_two_ranks_on_cpu(halfcheetah_dataset: str, minari_root: Path, tmp_path: Path):
    """torchrun --nproc_per_node 2 (gloo): one run directory, written once, loadable."""
    out = tmp_path / "ddp"
    env = dict(os.environ, MINARI_DATASETS_PATH=str(minari_root), OMP_NUM_THREADS="1")
    cmd = [
        str(VENV_BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "trajplan",
        "train",
        "--config",
        TINY,
        "--dataset",
        halfcheetah_dataset,
        "--epochs",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]  # no default runs/ dir anywhere
    assert res.stdout.count("finished after") == 1  # rank 0 reports, rank 1 does not
    doc = read_manifest(out)[1]
    assert doc["world_size"] == 2 and doc["status"] == "finished"
    # 236 windows over 2 ranks: 118 each, 32 per rank and step -> 4 steps per epoch
    assert doc["steps_per_epoch"] == 4 and doc["step"] == 8
    lines = metrics(out)
    assert [m["step"] for m in lines if m["kind"] == "epoch"] == [4, 8]  # one writer
    ckpt = load_checkpoint(out, device="cpu")
    assert ckpt.step == 8 and not ckpt.model.training


# -- bad input -----------------------------------------------------------------------------


def test_cli_bad_configs(halfcheetah_dataset: str, tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model:\n  n_layer: [1\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  learning_rate: 0.1\n")
    out = tmp_path / "run"
    ds = ("--dataset", halfcheetah_dataset, "--out", str(out), "--no-progress")
    one_line_error(cli("train", "--config", str(bad_yaml), *ds, code=2), "not valid YAML")
    one_line_error(cli("train", "--config", str(unknown), *ds, code=2), "learning_rate")
    one_line_error(
        cli("train", "--config", TINY, *ds, "--set", "model.obs_dim=11", code=2), "obs_dim", "17"
    )
    one_line_error(cli("train", "--config", TINY, *ds, "--set", "data.n_bins=x", code=2), "n_bins")
    one_line_error(cli("train", "--config", TINY, *ds, "--env", "hopper", code=2), "HalfCheetah")
    one_line_error(cli("train", "--env", "nosuchenv", "--out", str(out), code=2), "nosuchenv")
    one_line_error(cli("train", "--out", str(out), code=2), "--env")
    assert not out.exists()  # nothing was written by any of these


def test_cli_existing_run_dir_and_resume_errors(tiny_run: Path, tmp_path: Path):
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    args = ("train", "--config", TINY, "--out", str(run), "--no-progress")
    one_line_error(cli(*args, "--dataset", "x/halfcheetah/y-v0", code=2), "--resume")
    # resuming with a different model is refused
    one_line_error(
        cli("train", "--resume", "--out", str(run), "--set", "model.n_layer=2", code=2), "n_layer"
    )
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # untouched
    # a truncated resume state is one clear line, not a torch traceback
    state = run / "state.pt"
    state.write_bytes(before["state.pt"][: len(before["state.pt"]) // 2])
    one_line_error(
        cli("train", "--resume", "--out", str(run), "--max-steps", "50", code=2),
        "state.pt",
        "corrupt",
    )
    one_line_error(cli("train", "--resume", "--out", str(tmp_path / "none"), code=2), "not found")


def test_cli_subprocess_exit_code(tiny_run: Path) -> None:
    """The installed entry point: exit 2 and one red line for an existing run directory."""
    res = subprocess.run(
        [
            str(VENV_BIN / "trajplan"),
            "train",
            "--config",
            TINY,
            "--dataset",
            "a/b/c-v0",
            "--out",
            str(tiny_run),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, COLUMNS="200"),
    )
    assert res.returncode == 2
    one_line_error(res, "already exists")


def test_shipped_configs_load() -> None:
    """Every shipped YAML (trajplan/configs/) is valid; the reference configs carry the
    paper's overrides.

    docs/method.md, Planner.
    """
    names = config_names()
    assert {"tiny", "cpu-small", "cpu-recipe", "hopper-medium", "ant-medium-expert"} <= set(names)
    assert len(names) == 18  # 3 toy/CPU configs + 4 envs x 3 levels + 3 mazes
    for name in names:
        load_config(name)
    for size, horizon in (("umaze", 5), ("medium", 10), ("large", 15)):
        maze = load_config(f"pointmaze-{size}")
        assert maze.env == f"pointmaze-{size}" and maze.plan.horizon == horizon
        assert maze.dataset == f"local/pointmaze/{size}-v0"
    hc = config_for("halfcheetah")
    assert (hc.dataset, hc.plan.horizon, hc.plan.beam_width) == (
        "mujoco/halfcheetah/medium-v0",
        5,
        32,
    )
    me = config_for("halfcheetah", "medium-expert")
    assert me.dataset == "mujoco/halfcheetah/medium-v0+mujoco/halfcheetah/expert-v0"
    assert (me.plan.horizon, me.plan.beam_width) == (15, 32)
    wr = config_for("walker2d", "medium-replay")
    assert (wr.plan.horizon, wr.plan.beam_width, wr.plan.k_act, wr.plan.cdf_act) == (
        20,
        32,
        40,
        None,
    )
    assert wr.train.n_epochs_ref == 80 and config_for("hopper").train.n_epochs_ref == 50
    assert config_for("walker2d", "medium-expert").plan.horizon == 5
    assert config_for("ant").train.batch_size == 128
    assert config_for("hopper", "medium-replay").train.n_epochs_ref == 80
    custom = config_for("hopper", "local/hopper/medium-replay-v0")  # an id keeps its level
    assert custom.dataset == "local/hopper/medium-replay-v0" and custom.train.n_epochs_ref == 80
    with pytest.raises(TrajplanError, match="level"):
        config_for("hopper", "mediocre")
    assert math.isclose(config_for("hopper").train.lr, 6e-4)


def test_configs_by_name_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    """--config NAME finds a shipped config (with or without .yaml) from any working
    directory; a path still works; an unknown name is one line listing the names."""
    from trajplan.configs import CONFIG_DIR

    monkeypatch.chdir(tmp_path)  # no configs/ here
    tiny = load_config(CONFIG_DIR / "tiny.yaml")
    assert load_config("tiny") == tiny and load_config("tiny.yaml") == tiny
    assert load_config("cpu-recipe") == load_config(CONFIG_DIR / "cpu-recipe.yaml")
    assert load_config("cpu-recipe") != tiny
    own = tmp_path / "mine.yaml"
    own.write_text("model:\n  n_layer: 3\n")
    assert load_config(own).model.n_layer == 3 and load_config("mine.yaml").model.n_layer == 3
    (tmp_path / "tiny.yaml").write_text("model:\n  n_layer: 5\n")  # a file here wins
    assert load_config("tiny.yaml").model.n_layer == 5 and load_config("tiny") == tiny
    with pytest.raises(TrajplanError) as err:
        load_config("no-such-config")
    msg = str(err.value)
    assert "\n" not in msg and "'no-such-config'" in msg
    assert ", ".join(config_names()) in msg and "cpu-recipe" in msg
    with pytest.raises(TrajplanError, match=r"not found: configs/tiny.yaml \(.*--config tiny\)"):
        load_config("configs/tiny.yaml")  # a path is a path: nothing under this cwd
    with pytest.raises(TrajplanError, match="not found: x/mine.yaml .*cpu-recipe, cpu-small"):
        load_config("x/mine.yaml")


def test_cli_config_by_name(tmp_path: Path, monkeypatch) -> None:
    """`trajplan train --config NAME` from another directory; an unknown name is exit 2."""
    monkeypatch.chdir(tmp_path)
    res = cli("train", "--config", "nope", "--dataset", "a/b/c-v0", code=2)
    one_line_error(res, "unknown config 'nope'", "cpu-recipe", "tiny")
    assert not any(tmp_path.iterdir())  # nothing written


def test_ctrl_c_checkpoints_and_resumes(halfcheetah_dataset, minari_root, tmp_path) -> None:
    """SIGINT mid-run: the step finishes, a checkpoint says 'interrupted', exit 130; resume
    picks it up."""
    import signal
    import time

    out = tmp_path / "run"
    env = dict(os.environ, MINARI_DATASETS_PATH=str(minari_root), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "trajplan",
        "train",
        "--config",
        TINY,
        "--dataset",
        halfcheetah_dataset,
        "--epochs",
        "100000",
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300  # an event to wait for; the limit only ends a hang
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    _, doc = read_manifest(out)
    assert doc["status"] == "interrupted" and doc["step"] > 0
    step = doc["step"]
    resumed = train(
        tiny_cfg(halfcheetah_dataset, max_steps=step + 2, epochs=100000),
        out,
        resume=True,
        progress=False,
    )
    assert read_manifest(resumed)[1]["step"] == step + 2


def test_time_limit_stops_at_a_log_point(halfcheetah_dataset: str, tmp_path: Path) -> None:
    """The budget is checked every log_every steps: here at the end of the first epoch."""
    cfg = tiny_cfg(halfcheetah_dataset, log_every=4, time_limit_s=1e-6)
    run = train(cfg, tmp_path / "run", progress=False)
    _, doc = read_manifest(run)
    assert (doc["status"], doc["step"], doc["epoch"]) == ("time_limit", 4, 1)
    assert [m["kind"] for m in metrics(run)] == ["train", "epoch"]


def test_eval_during_training_changes_no_step_and_keeps_the_best(
    halfcheetah_dataset: str, tmp_path: Path
) -> None:
    """train.eval_every plans episodes with the current weights: "eval" records at every
    N steps and the last, best_eval.safetensors holding the best of them, and the same
    training as without it (planning never draws from the training generators); a resumed
    run keeps its best so far."""
    plain = train(tiny_cfg(halfcheetah_dataset, max_steps=6), tmp_path / "plain", progress=False)
    evals = dict(eval_every=2, eval_episodes=2, eval_episode_steps=3, max_steps=4)
    first = train(tiny_cfg(halfcheetah_dataset, **evals), tmp_path / "eval", progress=False)
    run = train(
        tiny_cfg(halfcheetah_dataset, **{**evals, "max_steps": 6}), first, resume=True,
        progress=False,
    )  # fmt: skip
    a, b = weights(plain), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    recs = [m for m in metrics(run) if m["kind"] == "eval"]
    assert [r["step"] for r in recs] == [2, 4, 6]
    assert all(r["capped"] and r["episodes"] == 2 and r["episode_steps"] == 3 for r in recs)
    best = max(recs, key=lambda r: r["score_mean"])
    assert [r.get("best", False) for r in recs][recs.index(best)]
    best_ckpt = load_checkpoint(run, device="cpu", which="best-eval")
    assert best_ckpt.which == "best-eval"
    from safetensors import safe_open

    with safe_open(str(run / "best_eval.safetensors"), "pt") as f:
        assert f.metadata()["step"] == str(best["step"])
    with pytest.raises(TrajplanError, match="trained without evaluations"):
        load_checkpoint(plain, device="cpu", which="best-eval")


def test_seeds_in_turn_and_in_child_processes(halfcheetah_dataset: str, tmp_path: Path):
    """--seeds trains OUT/seed<S> per seed, in this process or as --jobs child processes;
    the seeds differ only in train.seed, and bad requests fail before any training."""
    base = ("train", "--config", TINY, "--dataset", halfcheetah_dataset, "--max-steps", "3",
            "--no-progress", "--threads", "1")  # fmt: skip
    cli(*base, "--seeds", "0,1", "--out", str(tmp_path / "a"))
    cli(*base, "--seeds", "0-1", "--jobs", "2", "--out", str(tmp_path / "b"))
    for s in (0, 1):
        ca = read_manifest(tmp_path / "a" / f"seed{s}")[0]
        cb = read_manifest(tmp_path / "b" / f"seed{s}")[0]
        assert ca.train.seed == cb.train.seed == s
        wa, wb = weights(tmp_path / "a" / f"seed{s}"), weights(tmp_path / "b" / f"seed{s}")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)  # same run in or out of process
    w0, w1 = weights(tmp_path / "a" / "seed0"), weights(tmp_path / "a" / "seed1")
    assert not all(torch.equal(w0[k], w1[k]) for k in w0)
    assert (tmp_path / "b" / "seed1.log").exists()
    # resuming the seeds continues each one (here: nothing left to do)
    cli(*base, "--seeds", "0,1", "--out", str(tmp_path / "a"), "--resume")
    one_line_error(
        cli(*base, "--seeds", "0,1", "--out", str(tmp_path / "a"), code=2), "seed0", "--resume"
    )
    one_line_error(cli(*base, "--seeds", "0,x", "--out", str(tmp_path / "c"), code=2), "--seeds")
    one_line_error(cli(*base, "--seeds", "0,1", code=2), "--out")
    one_line_error(
        cli(*base, "--logger", "mlflow", "--out", str(tmp_path / "c"), code=2),
        "mlflow",
        "tensorboard",
    )
    assert not (tmp_path / "c").exists()


def test_parse_seeds() -> None:
    from trajplan.training.seeds import parse_seeds

    assert parse_seeds("0-2,7, 1") == [0, 1, 2, 7]
    assert parse_seeds("5") == [5]
    for bad in ("", "a", "1-", "0,,x"):
        with pytest.raises(TrajplanError, match="--seeds"):
            parse_seeds(bad)


def test_tiny_model_learns_a_sparse_reward(tmp_path: Path, one_thread, capfd) -> None:
    """A constructed sparse-reward dataset (1-D states, reward 1 where the state is above
    0.98: 2% of steps, below one bin's share of 20 bins). With the reference's bins reward 0
    and 1 share one token, so the model cannot tell the goal apart and training says so in a
    warning; with exact bins (the default) it predicts the goal's reward where it is."""
    import numpy as np

    from trajplan.data.episodes import Episodes
    from trajplan.data.transitions import prepare_episodes

    rng = np.random.default_rng(0)
    n_ep, length = 40, 50
    obs = rng.uniform(0, 1, (n_ep * length, 1)).astype(np.float32)
    reward = (obs[:, 0] > 0.98).astype(np.float32)
    ep = Episodes(
        observations=obs, actions=rng.uniform(-1, 1, (n_ep * length, 1)).astype(np.float32),
        rewards=reward, terminations=np.zeros(n_ep * length, bool),
        truncations=np.tile(np.arange(length) == length - 1, n_ep),
        starts=np.arange(n_ep) * length, lengths=np.full(n_ep, length), dataset_id="test/sparse",
    )  # fmt: skip
    expected = {}
    for mode in ("reference", "discrete"):
        cfg = tiny_cfg("test/sparse", epochs=4, batch_size=64)
        cfg.model.dropout, cfg.data.exact_bins, cfg.data.seq_len = 0.0, mode, 2
        data = prepare_episodes(ep, cfg.data)
        run = train(cfg, tmp_path / mode, data=data, progress=False, loggers=())
        warned = "merge or misdecode distinct values of reward" in capfd.readouterr().err
        assert warned == (mode == "reference")
        columns = read_manifest(run)[1]["columns"]
        assert columns["reward"][:2] == ([2, 1] if mode == "reference" else [2, 2])
        ckpt = load_checkpoint(run, device="cpu")
        D = data.transition_dim
        idx, _, _ = data.windows.get_batch(torch.arange(len(data.windows)))  # [n, L*D-1]
        with torch.no_grad():
            logits, _ = ckpt.model(idx)
        probs = torch.softmax(logits[:, D - 3, :-1].double(), -1)  # predicts token D-2: r0
        expected[mode] = ckpt.discretizer.expectation(probs, D - 2).numpy()  # [n] E[r]
        w = data.windows  # the true reward of each window's first step
        goal = ep.rewards[ep.starts[w.episode_index] + w.t_start.numpy()] > 0
        expected[mode] = (expected[mode][goal].mean(), expected[mode][~goal].mean())
    assert abs(expected["reference"][0] - expected["reference"][1]) < 0.01  # one token: no signal,
    assert expected["reference"][1] == pytest.approx(0.5, abs=0.02)  # every step half a goal
    at_goal, elsewhere = expected["discrete"]  # the goal's state bin holds 40% goals
    assert at_goal > 0.2 and elsewhere < 0.05


# -- precision: train.amp -----------------------------------------------------------------------


def test_amp_rule_and_round_trip(monkeypatch, tmp_path: Path) -> None:
    """bf16 autocast on CUDA and on CPUs with native bf16, fp32 elsewhere or with amp off;
    the setting survives --set and a config written as JSON (config.json) and read back,
    and rejects non-booleans."""
    import dataclasses
    from contextlib import nullcontext

    from trajplan.configs import apply_overrides
    from trajplan.training import loop

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for native in (True, False):
        monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda native=native: native)
        assert loop.uses_bf16(cpu, True) == native and loop.uses_bf16(cuda, True)
        assert not loop.uses_bf16(cpu, False) and not loop.uses_bf16(cuda, False)
        ctx = loop.training_autocast(cpu, True)
        assert isinstance(ctx, torch.autocast) == native
        assert isinstance(loop.training_autocast(cpu, False), nullcontext)
    assert TrainConfig().amp is True
    cfg = load_config(TINY)
    for amp in (False, True):
        apply_overrides(cfg, [f"train.amp={str(amp).lower()}"])
        path = tmp_path / f"amp-{amp}.yaml"  # JSON is YAML: what config.json holds
        path.write_text(json.dumps(dataclasses.asdict(cfg)))
        back = load_config(path)
        assert back == cfg and back.train.amp is amp
    with pytest.raises(TrajplanError, match="amp"):
        apply_overrides(cfg, ["train.amp=bf16"])


@pytest.mark.parametrize("transitions", [4, 20])  # 27 / 139 tokens: fp32 / bf16 attention
def test_cpu_bf16_step_close_to_fp32(transitions: int) -> None:
    """One training step on the CPU path (blocked kernels, dropout on) under bf16 autocast,
    against fp32 from the same weights, batch and dropout seed: finite fp32 loss and fp32
    gradients, the loss within 0.5% of fp32's and the gradient pointing the same way.

    Tolerance: bf16 keeps 8 significant bits (2^-9 = 0.2% relative rounding per value); the
    rounding errors of the logits are many small, mostly independent ones, and the mean
    cross-entropy over ~100-500 tokens averages them out: measured 0.003-0.02% off fp32,
    gradient cosine 0.99999. The bounds leave 10x and more room for other CPUs' kernels."""
    import copy

    base = tiny_model(seed=0, transitions=transitions, dropout=0.1, n_embd=32).train()
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 8, (4, base.block_size), generator=g)
    tgt = torch.randint(0, 8, (4, base.block_size), generator=g)
    mask = torch.ones(4, base.block_size)
    out = {}
    for amp in (False, True):
        model = copy.deepcopy(base)
        torch.manual_seed(3)  # the same dropout draws in both
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits, loss = model(idx, tgt, mask)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        out[amp] = (logits.dtype, loss, grads)
    assert out[True][0] == torch.bfloat16 and out[False][0] == torch.float32
    loss16, loss32 = out[True][1], out[False][1]
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)
    assert loss16.item() == pytest.approx(loss32.item(), rel=5e-3)
    g16, g32 = out[True][2], out[False][2]
    assert g16.dtype == torch.float32 and torch.isfinite(g16).all()
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.999
