"""Trained runs: every run format, and loading any of them behind one interface.

    checkpoint  TT's run directory (the one checkpoint format: written by train, read by
                plan, eval and collect)
    lifecycle   the run directory's rules for every training (TT, IQL, BC, ensemble): a new
                run or a resume checked and locked, dead ends, state.pt, saves due
    policy      runs whose exported actor acts (BC, IQL), and BC's format
    iql         IQL's run: its actor, and the `Critic` that scores TT's plans (TT + Q)
    ensemble    the PETS-style ensemble's run (`trajplan predict`'s baseline)
    load        `load_run`: any TT, BC or IQL run as a `Run`; `run_kind`, `load_critic`
    agent       a run acting in one episode at a time (the single-step API)

Training writes these formats (`trajplan.training`, `trajplan.baselines`,
`trajplan.prediction`); evaluation, the hub and the CLI read them. This package imports
none of those. The names below are the public API (`from trajplan.runs import load_run`).
"""

from trajplan.runs.agent import Agent
from trajplan.runs.load import Run, TTRun, check_env_matches, load_critic, load_run, run_kind

__all__ = ["Agent", "Run", "TTRun", "check_env_matches", "load_critic", "load_run", "run_kind"]
