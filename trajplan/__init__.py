"""trajplan: the Trajectory Transformer as a fast offline-RL planner.

Pipeline: data (Minari -> transitions) -> tokens (discretizer) -> model (TT GPT)
-> train -> plan (beam search) -> evaluate.

Rooms (subpackages; imports between them point one way, tests/test_layout.py):

    cli         the `trajplan` command tree
    hub         sharing runs on the Hugging Face Hub, model cards
    training    TT's trainer, seeds, and the minibatch loop the baselines share
    baselines   BC and IQL training
    prediction  long-horizon prediction and its ensemble baseline
    evaluation  playing episodes, eval folders, aggregates, plots
    behaviour   behaviour policies and dataset collection
    runs        every run format (TT, BC, IQL, ensemble) and `load_run`
    planner     the beam search and what it plans with
    parallel    child processes and Ray tasks
    model       the GPT, its caches and kernels; exported actors (MLP policies)
    data        datasets, transitions, tokens, hindsight goals
    envs        env names and factory, mazes, references, the episode loop, video
    configs     the shipped YAML configs

At the root, what every room uses: config (the config dataclasses), errors, runtime
(devices, seeds, atomic writes, signals), threads, progress, guards (memory and disk
checks).
"""

from trajplan.errors import TrajplanError

__version__ = "0.1.0"
__all__ = ["TrajplanError", "__version__"]
