"""Minari datasets on disk: find, open, read, list and describe them.

Everything here talks to Minari's local store (`$MINARI_DATASETS_PATH`, default
`~/.minari/datasets`) and turns Minari's errors into one-line TrajplanErrors. Putting datasets
into the store (create, download; atomic) is `trajplan.data.install`'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from trajplan.envs.mazes import GOAL_KEYS, flatten_goal_obs, goal_space_dim, is_goal_space
from trajplan.envs.references import reference_scores
from trajplan.envs.registry import env_for_dataset, resolve_env
from trajplan.errors import TrajplanError


def datasets_root() -> Path:
    """Where Minari keeps local datasets (a folder, or not there yet)."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    root = Path(env) if env else Path.home() / ".minari" / "datasets"
    if root.exists() and not root.is_dir():
        where = "MINARI_DATASETS_PATH" if env else "the default datasets folder"
        raise TrajplanError(f"{where} {root} is a file, not a folder: point it at a folder")
    return root


@contextlib.contextmanager
def minari_root(path: Path) -> Iterator[None]:
    """Point Minari at another datasets root for the duration of the block."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_dataset_id(dataset_id: str) -> str:
    """A single Minari id `(namespace/)name-vN`, or a one-line error."""
    from minari.dataset.minari_dataset import DATASET_ID_RE

    m = DATASET_ID_RE.fullmatch(dataset_id.strip())
    if not m or m.group("version") is None:
        raise TrajplanError(
            f"malformed dataset id {dataset_id!r}: expected (namespace/)name-vN, "
            "e.g. mujoco/halfcheetah/medium-v0"
        )
    return dataset_id.strip()


def split_dataset_ids(dataset_id: str) -> list[str]:
    """'a+b' -> ['a', 'b']; a missing '.../medium-expert-vN' -> medium + expert.

    docs/method.md, Data.
    """
    parts = [check_dataset_id(p) for p in dataset_id.split("+")]
    if len(parts) == 1 and not (datasets_root() / parts[0]).exists():
        head, sep, tail = parts[0].rpartition("medium-expert-v")
        if sep and tail.isdigit():
            return [f"{head}medium-v{tail}", f"{head}expert-v{tail}"]
    return parts


def local_dataset_dirs() -> list[str]:
    """Ids of every folder in the local store that looks like a dataset (readable or not)."""
    root = datasets_root()
    if not root.is_dir():
        return []
    found = (p.parent.parent.relative_to(root) for p in root.glob("**/data/metadata.json"))
    # hidden folders: a write's staging (.trajplan-tmp-*), never a dataset
    return sorted(str(p) for p in found if not any(part.startswith(".") for part in p.parts))


def _missing(dataset_id: str) -> TrajplanError:
    import difflib

    close = difflib.get_close_matches(dataset_id, local_dataset_dirs(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    how = "create it with `trajplan data collect ...`"
    if not dataset_id.startswith("local/"):  # local/ ids are never on Minari's remote
        how = f"run `trajplan data download {dataset_id}` (needs network) or {how}"
    return TrajplanError(f"dataset {dataset_id!r} not found in {datasets_root()}{hint}: {how}")


def is_stored(dataset_id: str) -> bool:
    """Whether the local store holds this dataset (its data folder)."""
    return (datasets_root() / check_dataset_id(dataset_id) / "data").exists()


def open_dataset(dataset_id: str) -> Any:
    """A `minari.MinariDataset` from the local store (`trajplan.data.install` puts one there)."""
    import minari

    dataset_id = check_dataset_id(dataset_id)
    if not is_stored(dataset_id):
        raise _missing(dataset_id)
    data = datasets_root() / dataset_id / "data"
    if not (data / "metadata.json").is_file():  # minari says "No data found"
        held = ", ".join(sorted(p.name for p in data.iterdir())[:5]) if data.is_dir() else ""
        raise TrajplanError(
            f"cannot open dataset {dataset_id!r}: {data} has no metadata.json"
            f"{f' (it holds {held})' if held else ''}: an incomplete copy or a collection "
            f"killed while writing; collect or install it again"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return minari.load_dataset(dataset_id)
    except Exception as exc:  # unsupported version, corrupt metadata, ...
        raise TrajplanError(f"cannot open dataset {dataset_id!r}: {first_line(exc)}") from None


def space_dim(space: gym.Space) -> int | None:
    """Dims of a Box, or of a goal Dict flattened (`trajplan.envs.mazes`); else None."""
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if is_goal_space(space):
        return goal_space_dim(space)
    return None


def box_dims(ds: Any) -> tuple[int, int]:
    """(obs_dim, act_dim) of a dataset with Box spaces (or a goal Dict observation, read
    flattened: Minari's D4RL mazes), else a one-line error."""
    spaces = {"observation": ds.observation_space, "action": ds.action_space}
    dims = []
    for what, space in spaces.items():
        dim = space_dim(space) if what == "observation" else None
        if dim is None and not isinstance(space, gym.spaces.Box):
            raise TrajplanError(
                f"dataset {ds.id!r}: trajplan needs a Box {what} space, got {type(space).__name__}"
            )
        dims.append(dim if dim is not None else int(np.prod(space.shape)))
    return dims[0], dims[1]


def env_id_of(ds: Any) -> str | None:
    """The Gymnasium id the dataset was recorded in (its env spec, else its eval env spec)."""
    spec = ds.env_spec or getattr(ds, "_eval_env_spec", None)
    return spec.id if spec is not None else None


EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


def iter_episodes(ds: Any) -> Iterator[dict[str, np.ndarray]]:
    """Raw episode arrays (observations T+1 rows, the rest T rows), in dataset order.

    For HDF5 storage (Minari's default) the five arrays are read straight from the file,
    skipping `infos`, which Minari would decode for every episode (docs/benchmarks.md); other
    formats go through Minari's own reader. Goal observations (a Dict of `observation`,
    `achieved_goal`, `desired_goal`) come flattened, as the env factory flattens them.
    """
    storage = ds.storage
    try:
        if storage.FORMAT == "hdf5":
            import h5py

            with h5py.File(storage.data_path / "main_data.hdf5", "r") as f:
                for i in ds.episode_indices:
                    group = f[f"episode_{i}"]
                    yield {k: _array(group[k]) for k in EPISODE_KEYS}
        else:
            for ep in storage.get_episodes(ds.episode_indices):
                yield {k: _array(ep[k]) for k in EPISODE_KEYS}
    except (OSError, KeyError, ValueError, TypeError) as exc:  # h5py / pyarrow: bad file
        raise _corrupt(ds, exc) from None


def _array(data: Any) -> np.ndarray:
    """One episode field as an array: an HDF5 dataset, an array, or a goal Dict (an HDF5 group
    or a dict) flattened to concat(observation, desired_goal)."""
    if hasattr(data, "keys"):  # an HDF5 group or a dict
        if set(GOAL_KEYS) <= set(data.keys()):
            return flatten_goal_obs({k: np.asarray(data[k][()]) for k in GOAL_KEYS})
        raise ValueError(f"a Dict field with keys {sorted(data.keys())}, not a goal observation")
    return np.asarray(data[()])


def _corrupt(ds: Any, exc: BaseException) -> TrajplanError:
    return TrajplanError(
        f"dataset {ds.id!r}: its data file in {ds.storage.data_path} is truncated or corrupt "
        f"({first_line(exc)}): download or collect it again (--force)"
    )


def _opens(h5: Path) -> bool:
    """True when an HDF5 file opens (h5py checks its signature and its recorded size)."""
    import h5py

    try:
        with h5py.File(h5, "r"):
            return True
    except (OSError, ValueError):
        return False


def check_data_file(ds: Any) -> None:
    """Open the episode file and find every episode in it (cheap: no arrays are read)."""
    if ds.storage.FORMAT != "hdf5":
        return
    import h5py

    try:
        with h5py.File(ds.storage.data_path / "main_data.hdf5", "r") as f:
            missing = [i for i in ds.episode_indices if f"episode_{i}" not in f]
    except (OSError, ValueError) as exc:
        raise _corrupt(ds, exc) from None
    if missing:
        raise _corrupt(ds, KeyError(f"episode_{missing[0]} missing"))


def registry_info(env_id: str | None, dataset_id: str) -> Any:
    """The registry entry of a dataset's env (by its Gymnasium id, else by the dataset id)."""
    if env_id:
        try:
            info = resolve_env(env_id)
        except TrajplanError:
            info = None
        if info is not None and info.dataset_id is not None:
            return info
    return env_for_dataset(dataset_id)


# -- listing and describing -------------------------------------------------------------------


def _env_from_metadata(meta: dict, key: str = "env_spec") -> str | None:
    spec = meta.get(key)
    if not spec:
        return None
    try:
        return json.loads(spec).get("id")
    except (ValueError, AttributeError):
        return None


def local_datasets() -> list[dict]:
    """One row per local dataset: id, episodes, steps, env, ref_min, ref_max, ref_source."""
    import minari

    if not datasets_root().exists():
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metas = minari.list_local_datasets()
    rows = []
    for dataset_id, meta in metas.items():
        h5 = datasets_root() / dataset_id / "data" / "main_data.hdf5"
        if meta.get("data_format", "hdf5") == "hdf5" and not _opens(h5):
            continue  # truncated or garbage: `data list` names it as unreadable
        env_id = _env_from_metadata(meta)
        lo, hi, src = reference_scores(meta, registry_info(env_id, dataset_id))
        rows.append(
            {
                "id": dataset_id,
                "episodes": int(meta.get("total_episodes", 0)),
                "steps": int(meta.get("total_steps", 0)),
                "env": env_id,
                "ref_min": lo,
                "ref_max": hi,
                "ref_source": src,
            }
        )
    return rows


def dataset_info(dataset_id: str) -> dict:
    """Everything `trajplan data info` shows about one local dataset (reads metadata only)."""
    ds = open_dataset(dataset_id)
    check_data_file(ds)
    meta = ds.storage.metadata
    env_id = env_id_of(ds)
    lo, hi, src = reference_scores(meta, registry_info(env_id, ds.id))
    obs_space, act_space = ds.observation_space, ds.action_space
    return {
        "id": ds.id,
        "path": str(datasets_root() / ds.id),
        "episodes": int(ds.total_episodes),
        "steps": int(ds.total_steps),
        "env": env_id,
        "eval_env": _env_from_metadata(meta, "eval_env_spec"),
        "observation_space": str(obs_space),
        "action_space": str(act_space),
        "obs_dim": space_dim(obs_space),
        "act_dim": space_dim(act_space),
        "ref_min": lo,
        "ref_max": hi,
        "ref_source": src,
        "algorithm": meta.get("algorithm_name"),
        "description": meta.get("description"),
        "data_format": meta.get("data_format"),
        "size_mb": round(float(meta["dataset_size"]), 3) if "dataset_size" in meta else None,
        "minari_version": meta.get("minari_version"),
        "combined_datasets": list(meta.get("combined_datasets", [])),
    }
