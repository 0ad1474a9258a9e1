"""Configs to and from plain dicts (JSON, YAML): `from_dict` builds a config dataclass with
strict key and type checks (every unknown key or wrongly typed value is one line) and reads
the keys older runs wrote; `to_dict` is its inverse. The config types and their value rules
are `trajplan.config`'s."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from trajplan.config import DataConfig, PlanConfig
from trajplan.errors import TrajplanError


def _check_type(where: str, value: Any, tp: Any) -> Any:
    """Coerce YAML scalars to the annotated type, or raise a clear error."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(where, value, inner[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise TrajplanError(f"{where}: expected a list of {len(args)} numbers, got {value!r}")
        return tuple(_check_type(where, v, a) for v, a in zip(value, args, strict=True))
    if tp is bool:
        if not isinstance(value, bool):
            raise TrajplanError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TrajplanError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TrajplanError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TrajplanError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _upgrade(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Read keys that older runs wrote (before 2026-12-07/08): `data.penalty_bin` false means
    the reference's bins; `plan.critic_form` q and `data.goal_relabel` final are the rule;
    `data.critic_weighting` and `data.critic_beta` null (no critic weighting) are dropped.
    The removed options (the penalty's own bin, later `exact_bins: atoms`; the V form;
    `future` goals; action tokens weighted by an IQL critic) are refused in one line."""
    if cls is DataConfig and "penalty_bin" in data and "exact_bins" not in data:
        data = dict(data)
        data["exact_bins"] = "atoms" if data.pop("penalty_bin") else "reference"
    if cls is DataConfig and "goal_relabel" in data:  # removed 2026-12-08: "final" is the rule
        if data["goal_relabel"] not in ("final", None):
            raise TrajplanError(
                "data.goal_relabel future was removed (never measured above final, "
                "docs/results.md): goals are the episode's final state"
            )
        data = {k: v for k, v in data.items() if k != "goal_relabel"}
    if cls is DataConfig and ("critic_weighting" in data or "critic_beta" in data):
        if data.get("critic_weighting") is not None:  # removed 2026-12-08: return weighting
            raise TrajplanError(
                "data.critic_weighting was removed (no score gain measured, docs/results.md): "
                "use data.action_weighting, or plan with the critic (eval --critic RUN)"
            )
        data = {k: v for k, v in data.items() if k not in ("critic_weighting", "critic_beta")}
    if cls is DataConfig and data.get("exact_bins") == "atoms":  # removed 2026-12-07
        raise TrajplanError(
            "data.exact_bins atoms (was data.penalty_bin) was removed (no score gain measured, "
            "docs/results.md): use discrete or reference"
        )
    if cls is PlanConfig and "critic_form" in data:  # removed 2026-12-07: only "q" is left
        if data["critic_form"] not in ("q", None):
            raise TrajplanError("plan.critic_form v was removed (it scored below q): use q")
        data = {k: v for k, v in data.items() if k != "critic_form"}
    return data


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass `cls` from a dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise TrajplanError(f"{where}: expected a mapping, got {type(data).__name__}")
    data = _upgrade(cls, data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            known = ", ".join(fields)
            raise TrajplanError(f"{where}: unknown key {key!r} (known: {known})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value or {}, f"{where}.{key}")
        else:
            kwargs[key] = _check_type(f"{where}.{key}", value, tp)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict (JSON/YAML-ready) of a dataclass config."""
    out = dataclasses.asdict(cfg)

    def fix(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: fix(v) for k, v in x.items()}
        if isinstance(x, tuple):
            return list(x)
        return x

    return fix(out)


# -- value rules of every section (one home; `from_dict` checks keys and types) -------
