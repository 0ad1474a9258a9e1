"""Where a training's config comes from, and which source wins (`train_config`): the one rule
`trajplan train`, `--seeds` children and scripts share."""

from __future__ import annotations

from trajplan.config import RunConfig
from trajplan.configs import apply_overrides, config_for, load_config
from trajplan.errors import TrajplanError
from trajplan.runs.checkpoint import read_manifest


def train_config(
    env: str | None,
    dataset: str | None,
    config: str | None,
    out: str | None,
    resume: bool,
    overrides: list[str],
    flags: dict[str, object],
    resume_with: str | None = None,
    goal: str | None = None,
) -> RunConfig:
    """The RunConfig of a training: a base (the run's own when resuming, a YAML file, the
    env's reference config, or the defaults for a dataset), then every override ("KEY=VALUE",
    `--set`) in order, then the train `flags` that are not None (epochs, lr, ...), then
    `goal` (data.goal_dims): the later source wins.

    resume_with (a `--seeds` child that goes on): the seeds' config file, the settings
    asked for; the run checks them against its own (`resume_config`) as an in-process seed.
    """

    if resume and resume_with is not None:
        cfg = load_config(resume_with)
    elif resume:
        if out is None:
            raise TrajplanError("--resume needs --out DIR: the run directory to continue")
        if config is not None:
            raise TrajplanError(
                "--resume continues with the run's own config: drop --config "
                "(loop settings such as --max-steps or --set train.epochs=N may change)"
            )
        cfg, _ = read_manifest(out)  # the run's own config; only loop settings may change
        for flag, given, own in (("--env", env, cfg.env), ("--dataset", dataset, cfg.dataset)):
            if given is not None and given != own:  # never silently ignored
                raise TrajplanError(
                    f"--resume continues {out} on its own {flag[2:]} {own!r}: drop {flag} "
                    f"{given!r} (or train a new run on it)"
                )
    elif config is not None:
        cfg = load_config(config)
        if env is not None:
            cfg.env = env
        if dataset is not None:
            cfg.dataset = dataset
    elif env is not None:
        cfg = config_for(env, dataset)
    elif dataset is not None:
        cfg = RunConfig(dataset=dataset)
    else:
        raise TrajplanError("give --env NAME, --dataset ID or --config FILE (see --help)")
    apply_overrides(cfg, overrides)
    for key, value in flags.items():
        if value is not None:
            setattr(cfg.train, key, value)
    if goal is not None:
        cfg.data.goal_dims = goal
    return cfg
