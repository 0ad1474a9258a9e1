"""Run the CUDA paths end to end and time them: one JSON line of figures at the end.

    bash scripts/gpu_check.sh                 # on a machine with a GPU, a few minutes
    bash scripts/gpu_check.sh --device cpu --small   # the same steps at toy size (CI, tests)

Steps, each a real command of the CLI or a benchmark script, in a temporary folder:
  1. data      a local HalfCheetah medium dataset collected with the bundled actor
  2. train     the reference-size model (config halfcheetah-medium) for --train-steps
               optimizer steps: bf16 autocast + TF32, then the same with torch.compile
  3. plan      scripts/bench_plan.py --quick on the device (cached vs full, h5 / b32)
  4. eval      --episodes full-length episodes planned as one batch on the device, h5 / b32
  5. ddp       a 2-process NCCL torchrun run, when two GPUs exist (skipped otherwise)
A failing step is reported in the JSON (`<step>_error`) and the script exits 1 at the end;
the target of issue 11 is 25 episodes x 1000 steps at h5 / b32 in under 2 minutes on one
H100-class GPU (`eval_wall_s`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Run one command, its output into log; wall seconds, or raise with the log's tail."""
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"exit {proc.returncode}: {' | '.join(tail)}")
    return time.perf_counter() - t0


def last_json(log: Path) -> dict[str, Any]:
    return json.loads(log.read_text().strip().splitlines()[-1])


def train_speed(run_dir: Path) -> float:
    """Tokens per second of the last train line of a run's metrics.jsonl."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return float([r for r in rows if r.get("kind") == "train"][-1]["tokens_per_s"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run")
    ap.add_argument("--small", action="store_true", help="toy sizes (config tiny)")
    ap.add_argument("--episodes", type=int, default=None, help="eval episodes (25; small: 2)")
    ap.add_argument("--train-steps", type=int, default=None, help="(200; small: 20)")
    ap.add_argument("--skip", default="", help="steps to skip, comma-separated: plan,ddp")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: tmp)")
    args = ap.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch (use --device cpu for a dry run)")
        return 2
    small = args.small
    episodes = args.episodes or (2 if small else 25)
    train_steps = args.train_steps or (20 if small else 200)
    episode_steps = 20 if small else 1000
    config = "tiny" if small else "halfcheetah-medium"
    work = args.out or Path(tempfile.mkdtemp(prefix="trajplan-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MINARI_DATASETS_PATH": str(work / "datasets"), "PYTHONUNBUFFERED": "1"}
    py = [sys.executable]
    cli = [*py, "-m", "trajplan"]
    dataset = "gpucheck/halfcheetah/medium-v0"
    # a CPU dry run uses one thread: on busy cores torch's default can be 50x slower
    threads = ["--threads", "1"] if args.device == "cpu" else []
    figs: dict[str, Any] = {"device": args.device, "small": small}
    if args.device.startswith("cuda"):
        figs["gpu"] = torch.cuda.get_device_name(0)
        figs["gpus"] = torch.cuda.device_count()
    t_all = time.perf_counter()
    failed = False

    def step(name: str, fn: Any) -> None:
        nonlocal failed
        try:
            fn()
        except Exception as exc:  # one failing step must not hide the others' figures
            failed = True
            figs[f"{name}_error"] = str(exc)[:300]
        print(f"gpu_check: {name} done ({time.perf_counter() - t_all:.0f} s)", flush=True)

    def data() -> None:
        steps = "2000" if small else "50000"
        cmd = [*cli, "data", "collect", "--env", "halfcheetah", "--policy", "medium"]
        figs["data_s"] = round(
            run([*cmd, "--steps", steps, "--dataset-id", dataset], env, work / "data.log"), 1
        )

    def train() -> None:
        for name, extra in (("amp", []), ("compile", ["--set", "train.compile=true"])):
            if name == "compile" and args.device == "cpu":
                continue  # torch.compile is a CUDA option here
            out = work / f"run-{name}"
            cmd = [*cli, "train", "--config", config, "--dataset", dataset, "--device"]
            cmd += [args.device, "--max-steps", str(train_steps), "--out", str(out)]
            cmd += ["--no-progress", *threads, *extra]
            figs[f"train_{name}_s"] = round(run(cmd, env, work / f"train-{name}.log"), 1)
            figs[f"train_{name}_tokens_per_s"] = round(train_speed(out))

    def plan() -> None:
        cmd = [*py, "scripts/bench_plan.py", "--device", args.device, "--quick", "--steps", "2"]
        run(cmd, env, work / "bench_plan.log")
        for key, value in last_json(work / "bench_plan.log").items():
            if "ms" in key or "speedup" in key:
                figs[f"plan_{key}"] = value

    def evaluate() -> None:
        cmd = [*cli, "eval", "--checkpoint", str(work / "run-amp"), "--episodes"]
        cmd += [str(episodes), "--episode-steps", str(episode_steps), "--device", args.device]
        cmd += ["--horizon", "5", "--beam-width", "32", "--out", str(work / "eval")]
        cmd += ["--no-progress", *threads]
        figs["eval_episodes"] = episodes
        figs["eval_episode_steps"] = episode_steps
        figs["eval_wall_s"] = round(run(cmd, env, work / "eval.log"), 1)
        report = json.loads(next((work / "eval").rglob("eval.json")).read_text())
        figs["eval_ms_per_step"] = report["summary"].get("ms_per_step")

    def ddp() -> None:
        if not args.device.startswith("cuda") or torch.cuda.device_count() < 2:
            figs["ddp"] = "skipped (fewer than 2 GPUs)"
            return
        out = work / "run-ddp"
        cmd = [*py, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "trajplan"]
        cmd += ["train", "--config", config, "--dataset", dataset, "--device", "cuda"]
        cmd += ["--max-steps", str(train_steps), "--out", str(out), "--no-progress"]
        figs["ddp_s"] = round(run(cmd, env, work / "ddp.log"), 1)
        figs["ddp_tokens_per_s"] = round(train_speed(out))

    skip = set(filter(None, args.skip.split(",")))
    steps = {"data": data, "train": train, "plan": plan, "eval": evaluate, "ddp": ddp}
    if skip - set(steps) or skip & {"data", "train"}:
        print(f"gpu_check: --skip takes plan, eval or ddp, got {args.skip!r}")
        return 2
    for name, fn in steps.items():
        if name not in skip:
            step(name, fn)
    figs["total_s"] = round(time.perf_counter() - t_all, 1)
    figs["work_dir"] = str(work)
    print(json.dumps(figs))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
