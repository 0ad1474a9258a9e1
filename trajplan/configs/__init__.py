"""The shipped configs (this folder's YAML files) and loading any config: by name from any
directory (`load_config("cpu-recipe")`: trajplan/configs/cpu-recipe.yaml), or by path;
`--set section.key=value` overrides; the reference config for an env and dataset level.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from trajplan.config import RunConfig
from trajplan.configs.convert import _upgrade, from_dict
from trajplan.envs.registry import resolve_env
from trajplan.errors import TrajplanError

CONFIG_DIR = Path(__file__).parent
LEVELS = ("medium", "medium-replay", "medium-expert")


def config_names() -> list[str]:
    """The shipped configs' names (trajplan/configs/NAME.yaml), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(name_or_path: str | Path) -> Path:
    """A config's file: a path to a YAML file, or a shipped config's name with or without
    .yaml ("cpu-recipe", "tiny.yaml"), found in the package from any directory. A file at
    the given path wins over a shipped config of that name."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    name = p.name.removesuffix(".yaml").removesuffix(".yml")
    shipped = CONFIG_DIR / f"{name}.yaml"
    if str(p.parent) == "." and shipped.is_file():  # a bare name, not a missing path
        return shipped
    if p.suffix in (".yaml", ".yml") or str(p.parent) != ".":
        if shipped.is_file():  # e.g. configs/tiny.yaml from outside the repository
            raise TrajplanError(f"config file not found: {p} (the shipped one: --config {name})")
        raise TrajplanError(
            f"config file not found: {p} (or give a shipped config's name: "
            f"{', '.join(config_names())})"
        )
    raise TrajplanError(
        f"unknown config {str(name_or_path)!r}: give a YAML file or one of "
        f"{', '.join(config_names())}"
    )


def load_config(path: str | Path | None = None) -> RunConfig:
    """Read a YAML run config: a file, or a shipped config by name (`resolve_config`);
    the defaults when path is None."""
    if path is None:
        return RunConfig()
    p = resolve_config(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise TrajplanError(f"{p}: not valid YAML ({first})") from None
    return from_dict(RunConfig, data, where=p.name)


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """Apply `section.key=value` strings (values parsed as YAML) to a config, in place."""
    for item in overrides:
        if "=" not in item:
            raise TrajplanError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=3e-4")
        dotted, raw = item.split("=", 1)
        *path, key = dotted.strip().split(".")
        target = cfg
        for part in path:
            if not dataclasses.is_dataclass(target) or not hasattr(target, part):
                raise TrajplanError(f"override {item!r}: unknown section {part!r}")
            target = getattr(target, part)
            if not dataclasses.is_dataclass(target):  # train.lr.x=1: lr is a value
                raise TrajplanError(f"override {item!r}: {part!r} is a key, not a section")
        value = yaml.safe_load(raw)
        merged = from_dict(type(target), {key: value}, where="override")
        for name in _upgrade(type(target), {key: value}):  # a removed key's neutral value: none
            setattr(target, name, getattr(merged, name))
    return cfg


def dataset_level(dataset_id: str) -> str:
    """'mujoco/hopper/medium-v0' -> 'medium'; 'a/medium-v0+a/expert-v0' -> 'medium-expert'."""
    levels = []
    for part in dataset_id.split("+"):
        name = part.rstrip("/").rsplit("/", 1)[-1]
        stem, sep, version = name.rpartition("-v")
        levels.append(stem if sep and version.isdigit() else name)
    return "-".join(levels)


def config_for(env: str, dataset: str | None = None) -> RunConfig:
    """The reference config for an env and a dataset level or Minari id (default: medium).

    `dataset` is a level (medium, medium-replay, medium-expert) or a dataset id; an id keeps
    its level's config (trajplan/configs/<env>-<level>.yaml, else the env's medium config)
    and replaces the dataset. An env without shipped configs gets the defaults (the
    reference values)."""

    info = resolve_env(env)
    is_id = dataset is not None and "/" in dataset
    level = dataset_level(dataset) if is_id else (dataset or "medium")
    if not is_id and level not in LEVELS:
        raise TrajplanError(
            f"unknown dataset level {level!r}: use one of {', '.join(LEVELS)} or a Minari id"
        )
    path = CONFIG_DIR / f"{info.name}-{level}.yaml"
    if not path.is_file():
        path = CONFIG_DIR / f"{info.name}-medium.yaml"
    cfg = load_config(path) if path.is_file() else RunConfig(env=info.name)
    cfg.env = info.name
    if is_id:
        cfg.dataset = dataset
    elif cfg.dataset is None:
        cfg.dataset = info.dataset_id
    return cfg
