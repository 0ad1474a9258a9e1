"""`trajplan data list / info / download` (trajplan.data.store) and `collect / from-replay`
(trajplan.behaviour.collect)."""

from __future__ import annotations

import typer

from trajplan.cli.options import console, seed_option


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def data_list() -> None:
    """List the Minari datasets on this machine ($MINARI_DATASETS_PATH or ~/.minari/datasets).

    Reference scores come from the dataset's metadata, else from the D4RL constants.
    """
    from rich.table import Table

    from trajplan.data.store import datasets_root, local_dataset_dirs, local_datasets

    rows = local_datasets()
    if not rows:
        console.print(
            f"no datasets in {datasets_root()}: get one with `trajplan data download ID` "
            "or create one with `trajplan data collect ...`"
        )
        return
    table = Table(title=f"Minari datasets in {datasets_root()}")
    table.add_column("id", overflow="fold")
    table.add_column("episodes", justify="right", no_wrap=True)
    table.add_column("steps", justify="right", no_wrap=True)
    table.add_column("env", overflow="fold")
    table.add_column("reference scores", overflow="fold")
    for r in rows:
        refs = "-"
        if r["ref_min"] is not None:
            source = "D4RL" if r["ref_source"].startswith("D4RL") else "metadata"
            refs = f"{r['ref_min']:g} .. {r['ref_max']:g} ({source})"
        table.add_row(r["id"], _fmt(r["episodes"]), _fmt(r["steps"]), _fmt(r["env"]), refs)
    console.print(table)
    broken = sorted(set(local_dataset_dirs()) - {r["id"] for r in rows})
    if broken:  # Minari's listing skips datasets it cannot read
        console.print(
            f"[yellow]{len(broken)} unreadable: {', '.join(broken)} "
            "(trajplan data info ID says why)[/]",
            highlight=False,
        )


def data_info(
    dataset_id: str = typer.Argument(..., help="Local Minari id, e.g. mujoco/hopper/medium-v0."),
    bins: bool = typer.Option(
        True,
        help="Also fit the tokens' bins and show, per column, its distinct values, the tokens "
        "they use and the round-trip error (a few seconds on 1M steps).",
    ),
    exact_bins: str = typer.Option(
        "discrete",
        help="data.exact_bins for --bins: reference (the published rule) or discrete (a bin "
        "of its own for each value of a few-valued column).",
    ),
    n_bins: int = typer.Option(100, help="data.n_bins for --bins.", min=1),
) -> None:
    """Show one local dataset: size, env, spaces, reference scores and where they come from,
    and how the default tokens keep each column (a sparse reward's 0 and 1 apart or not)."""
    from rich.table import Table

    from trajplan.config import DataConfig
    from trajplan.data.store import dataset_info
    from trajplan.data.transitions import check_bins, load_episodes

    info = dataset_info(dataset_id)
    checks = []
    if bins:  # checked before anything is printed: a bad mode is one line
        cfg = DataConfig(exact_bins=exact_bins, n_bins=n_bins)
        checks = check_bins(load_episodes(dataset_id), cfg)
    table = Table(title=dataset_id, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in info.items():
        if key == "combined_datasets":
            value = ", ".join(value) or None
        table.add_row(key.replace("_", " "), _fmt(value))
    console.print(table)
    if not checks:
        return
    cols = Table(title=f"tokens ({n_bins} bins, exact_bins={exact_bins})")
    for head in ("column", "distinct values", "tokens", "max |error|", "mean |error|", ""):
        cols.add_column(head, justify="left" if head == "column" else "right")
    for c in checks:
        flag = "merged" if c.merged else ""
        cols.add_row(c.name, str(c.distinct), str(c.tokens), f"{c.max_error:.3g}",
                     f"{c.mean_error:.3g}", flag)  # fmt: skip
    console.print(cols)


def data_download(
    dataset_id: str = typer.Argument(
        ...,
        help="Remote Minari id, e.g. mujoco/halfcheetah/medium-v0; 'a+b' or "
        "'.../medium-expert-v0' fetch both parts.",
    ),
    force: bool = typer.Option(False, "--force", help="Download again even if it is local."),
) -> None:
    """Fetch a dataset from Minari's remote (needs network and `pip install 'trajplan\\[hub]'`).

    Remote MuJoCo datasets: mujoco/{halfcheetah,hopper,walker2d,ant}/{simple,medium,expert}-v0;
    mazes (needs trajplan\\[mazes]): D4RL/pointmaze/{umaze,medium,large}[-dense]-v2 and
    D4RL/antmaze/{umaze,umaze-diverse,medium-play,medium-diverse,large-play,large-diverse}-v1.
    """
    from trajplan.data.install import download_dataset

    for path in download_dataset(dataset_id, force=force):
        console.print(f"dataset ready at {path}")


def data_collect(
    env: str = typer.Option(..., help="Env short name (halfcheetah, hopper, ...) or Gymnasium id."),
    policy: str = typer.Option(
        ...,
        help="'random'; 'medium' or 'expert' (the actor shipped for this env); 'waypoint' (the "
        "maze controller of pointmaze envs, as D4RL's maze2d data); a path to an exported "
        "actor (*.actor.safetensors, see scripts/train_behavior.py); or a trajplan run "
        "directory (its planner acts).",
    ),
    steps: int = typer.Option(..., help="Env steps in total (whole episodes; the last is cut)."),
    dataset_id: str = typer.Option(
        None,
        help="Minari id to create, e.g. local/hopper/medium-v0 (namespace/name-vN); default "
        "local/ENV/POLICY-v0 (mazes: local/pointmaze/large-v0 for the waypoint policy).",
    ),
    seed: int = seed_option(0, "Episode i is reset with seed+i: same seed, same dataset."),
    force: bool = typer.Option(False, "--force", help="Replace an existing dataset of that id."),
    max_episode_steps: int = typer.Option(
        None, help="Cut episodes at this length (default: the env's own limit, 1000 for MuJoCo)."
    ),
    mix_random: str = typer.Option(
        "0",
        help="Mixed-quality data: each episode takes uniform random actions at a rate drawn "
        "from this range, e.g. 0:1 (0 = off).",
    ),
    noise: str = typer.Option(
        None,
        help="Each episode adds Gaussian action noise with a std drawn from this range (in "
        "half-widths of the action box), e.g. 0:0.5 (0 = off); default 0, and 0.5 for the "
        "waypoint policy (as Minari's maze data).",
    ),
) -> None:
    """Roll out a behaviour policy and save the episodes as a local Minari dataset.

    Example: trajplan data collect --env hopper --policy medium --steps 100000
    --dataset-id local/hopper/medium-v0

    Mixed quality (like D4RL's medium-replay): add --mix-random 0:1 and/or --noise 0:0.5.

    Mazes (D4RL's maze2d): trajplan data collect --env pointmaze-large --policy waypoint
    --steps 1000000 (goals anywhere, every goal reached ends an episode).
    """
    from trajplan.behaviour.collect import collect
    from trajplan.behaviour.policies import parse_range
    from trajplan.data.store import datasets_root
    from trajplan.runtime import Stopped

    try:
        path = collect(
            env,
            policy,
            steps,
            dataset_id,
            seed=seed,
            force=force,
            max_episode_steps=max_episode_steps,
            random_rate=parse_range(mix_random, "--mix-random"),
            noise=None if noise is None else parse_range(noise, "--noise"),
        )
    except Stopped as stop:  # Ctrl-C or SIGTERM: exit 130 or 143, nothing written
        typer.echo("stopped: no dataset written", err=True)
        raise typer.Exit(stop.exit_code) from None
    console.print(f"wrote dataset [bold]{path.relative_to(datasets_root())}[/] to {path}")


def data_from_replay(
    env: str = typer.Option(..., help="Env the replay was recorded in (short name or id)."),
    replay: str = typer.Option(..., help="replay_*.npz written by scripts/train_behavior.py."),
    dataset_id: str = typer.Option(
        ..., help="Minari id to create, e.g. local/hopper/medium-replay-v0."
    ),
    max_steps: int = typer.Option(None, help="Keep only the episodes within the first N steps."),
    force: bool = typer.Option(False, "--force", help="Replace an existing dataset of that id."),
) -> None:
    """Turn a SAC run's replay buffer into a Minari dataset (D4RL's medium-replay)."""
    from trajplan.behaviour.collect import from_replay

    path = from_replay(env, replay, dataset_id, max_steps=max_steps, force=force)
    console.print(f"wrote dataset [bold]{dataset_id}[/] to {path}")
