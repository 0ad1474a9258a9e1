"""Sharing runs on the Hugging Face Hub (`trajplan hub push / pull`).

    share       stage a run's folder (weights, eval, config, model card), push it, pull one
    model_card  the README.md of a shared run: env, dataset, scores, training, commands

Reads runs (`trajplan.runs`) and their evaluations (`trajplan.evaluation`); nothing imports it
but the CLI.
"""
