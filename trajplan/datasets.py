"""Minari datasets on disk: open, read, create, list, describe and download them.

Everything here talks to Minari's local store (`$MINARI_DATASETS_PATH`, default
`~/.minari/datasets`) and turns Minari's errors into one-line TrajplanErrors. Writing is
atomic: a dataset is built under a hidden temporary root next to the real one (Minari reads the
root from the environment variable on every call) and moved into place with one rename, so a
failure or a kill never leaves a half-written dataset where Minari would find it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from trajplan.envs import env_for_dataset, quiet_mujoco, resolve_env
from trajplan.errors import TrajplanError
from trajplan.scores import reference_scores


def datasets_root() -> Path:
    """Where Minari keeps local datasets (a folder, or not there yet)."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    root = Path(env) if env else Path.home() / ".minari" / "datasets"
    if root.exists() and not root.is_dir():
        where = "MINARI_DATASETS_PATH" if env else "the default datasets folder"
        raise TrajplanError(f"{where} {root} is a file, not a folder: point it at a folder")
    return root


@contextlib.contextmanager
def _minari_root(path: Path) -> Iterator[None]:
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


def _first_line(exc: BaseException) -> str:
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
    return sorted(
        str(p.parent.parent.relative_to(root)) for p in root.glob("**/data/metadata.json")
    )


def _missing(dataset_id: str) -> TrajplanError:
    import difflib

    close = difflib.get_close_matches(dataset_id, local_dataset_dirs(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    how = "create it with `trajplan data collect ...`"
    if not dataset_id.startswith("local/"):  # local/ ids are never on Minari's remote
        how = f"run `trajplan data download {dataset_id}` (needs network) or {how}"
    return TrajplanError(f"dataset {dataset_id!r} not found in {datasets_root()}{hint}: {how}")


def open_dataset(dataset_id: str, download: bool = False) -> Any:
    """A `minari.MinariDataset` from the local store (downloading it first if asked)."""
    import minari

    dataset_id = check_dataset_id(dataset_id)
    if not (datasets_root() / dataset_id / "data").exists():
        if not download:
            raise _missing(dataset_id)
        download_dataset(dataset_id)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return minari.load_dataset(dataset_id)
    except Exception as exc:  # unsupported version, corrupt metadata, ...
        raise TrajplanError(f"cannot open dataset {dataset_id!r}: {_first_line(exc)}") from None


def box_dims(ds: Any) -> tuple[int, int]:
    """(obs_dim, act_dim) of a dataset with flat Box spaces, else a one-line error."""
    spaces = {"observation": ds.observation_space, "action": ds.action_space}
    for what, space in spaces.items():
        if not isinstance(space, gym.spaces.Box):
            raise TrajplanError(
                f"dataset {ds.id!r}: trajplan needs a Box {what} space, got {type(space).__name__}"
            )
    o = int(np.prod(ds.observation_space.shape))
    a = int(np.prod(ds.action_space.shape))
    return o, a


def env_id_of(ds: Any) -> str | None:
    """The Gymnasium id the dataset was recorded in (its env spec, else its eval env spec)."""
    spec = ds.env_spec or getattr(ds, "_eval_env_spec", None)
    return spec.id if spec is not None else None


_EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


def iter_episodes(ds: Any) -> Iterator[dict[str, np.ndarray]]:
    """Raw episode arrays (observations T+1 rows, the rest T rows), in dataset order.

    For HDF5 storage (Minari's default) the five arrays are read straight from the file,
    skipping `infos`, which Minari would decode for every episode (1M steps with four info
    keys: 3.1 s instead of 5.5 s on 2 cores); other formats go through Minari's own reader.
    """
    storage = ds.storage
    try:
        if storage.FORMAT == "hdf5":
            import h5py

            with h5py.File(storage.data_path / "main_data.hdf5", "r") as f:
                for i in ds.episode_indices:
                    group = f[f"episode_{i}"]
                    yield {k: group[k][()] for k in _EPISODE_KEYS}
        else:
            for ep in storage.get_episodes(ds.episode_indices):
                yield {k: np.asarray(ep[k]) for k in _EPISODE_KEYS}
    except (OSError, KeyError, ValueError, TypeError) as exc:  # h5py / pyarrow: bad file
        raise _corrupt(ds, exc) from None


def _corrupt(ds: Any, exc: BaseException) -> TrajplanError:
    return TrajplanError(
        f"dataset {ds.id!r}: its data file in {ds.storage.data_path} is truncated or corrupt "
        f"({_first_line(exc)}): download or collect it again (--force)"
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
        "obs_dim": int(np.prod(obs_space.shape)) if obs_space.shape else None,
        "act_dim": int(np.prod(act_space.shape)) if act_space.shape else None,
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


# -- moving finished datasets into place ------------------------------------------------------


def _install(tmp_root: Path, dataset_id: str, force: bool) -> Path:
    """Move tmp_root/dataset_id to the real root in one rename (plus namespace metadata)."""
    root = tmp_root.parent
    final = root / dataset_id
    final.parent.mkdir(parents=True, exist_ok=True)
    # Namespace metadata files Minari wrote under the temporary root (kept if already there).
    for parent in Path(dataset_id).parents:
        src = tmp_root / parent / "namespace_metadata.json"
        dst = root / parent / "namespace_metadata.json"
        if str(parent) != "." and src.exists() and not dst.exists():
            shutil.copyfile(src, dst)
    trash = None
    if final.exists():
        if not force:
            raise TrajplanError(f"dataset {dataset_id!r} already exists (use force to replace it)")
        trash = root / f".trajplan-old-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
    os.rename(tmp_root / dataset_id, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return final


@contextlib.contextmanager
def _staging_root() -> Iterator[Path]:
    """A hidden temporary datasets root next to the real one (same filesystem: rename works)."""
    root = datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".trajplan-tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- creating -----------------------------------------------------------------------------------


def _check_episode(i: int, ep: dict, obs_shape: tuple, act_shape: tuple) -> dict:
    missing = [k for k in _EPISODE_KEYS if k not in ep]
    if missing:
        raise TrajplanError(f"episode {i}: missing {', '.join(missing)}")
    obs = np.asarray(ep["observations"])
    act = np.asarray(ep["actions"])
    rew = np.asarray(ep["rewards"], dtype=np.float64).reshape(-1)
    term = np.asarray(ep["terminations"], dtype=bool).reshape(-1)
    trunc = np.asarray(ep["truncations"], dtype=bool).reshape(-1)
    t = len(rew)
    if t == 0:
        raise TrajplanError(f"episode {i}: no steps")
    if obs.shape != (t + 1, *obs_shape):
        raise TrajplanError(
            f"episode {i}: observations must have shape {(t + 1, *obs_shape)} (T+1 rows), "
            f"got {obs.shape}"
        )
    if act.shape != (t, *act_shape):
        raise TrajplanError(
            f"episode {i}: actions must have shape {(t, *act_shape)}, got {act.shape}"
        )
    if len(term) != t or len(trunc) != t:
        raise TrajplanError(f"episode {i}: terminations and truncations need {t} entries")
    for name, arr in (("observations", obs), ("actions", act), ("rewards", rew)):
        if not np.isfinite(arr).all():
            raise TrajplanError(f"episode {i}: {name} contain NaN or inf values")
    return {
        "observations": obs,
        "actions": act,
        "rewards": rew,
        "terminations": term,
        "truncations": trunc,
    }


def create_dataset(
    dataset_id: str,
    episodes: list[dict],
    env_id: str,
    *,
    seeds: list[int] | None = None,
    ref_min: float | None = None,
    ref_max: float | None = None,
    algorithm_name: str | None = None,
    description: str | None = None,
    force: bool = False,
) -> Path:
    """Write episodes as a local Minari dataset (HDF5) and return its directory.

    Each episode dict holds observations [T+1, o], actions [T, a], rewards [T],
    terminations [T], truncations [T]. The env (a short name or Gymnasium id) gives the env
    spec and eval env spec. Reference scores are stored only as a pair (alone, Minari would
    estimate ref_min with 100 random episodes). Built with `EpisodeBuffer` +
    `minari.create_dataset_from_buffers` (no JAX), staged and renamed into place atomically.
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    dataset_id = check_dataset_id(dataset_id)
    if (datasets_root() / dataset_id).exists() and not force:
        raise TrajplanError(f"dataset {dataset_id!r} already exists (use --force to replace it)")
    if not episodes:
        raise TrajplanError("cannot create a dataset without episodes")
    if seeds is not None and len(seeds) != len(episodes):
        raise TrajplanError(f"got {len(seeds)} seeds for {len(episodes)} episodes")
    if (ref_min is None) != (ref_max is None):
        raise TrajplanError("give both ref_min and ref_max, or neither")

    quiet_mujoco()
    gym_id = resolve_env(env_id).gym_id
    try:
        env = gym.make(gym_id)
    except Exception as exc:
        raise TrajplanError(f"cannot create env {gym_id}: {_first_line(exc)}") from None
    try:
        obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
        buffers = []
        for i, ep in enumerate(episodes):
            ep = _check_episode(i, ep, obs_shape, act_shape)
            buffers.append(
                EpisodeBuffer(
                    seed=None if seeds is None else int(seeds[i]),
                    observations=ep["observations"].astype(env.observation_space.dtype),
                    actions=ep["actions"].astype(env.action_space.dtype),
                    rewards=ep["rewards"],
                    terminations=ep["terminations"],
                    truncations=ep["truncations"],
                )
            )
        with _staging_root() as tmp:
            with _minari_root(tmp), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # author / permalink "recommended" notes
                try:
                    minari.create_dataset_from_buffers(
                        dataset_id,
                        buffers,
                        env=env,
                        eval_env=env.spec,
                        algorithm_name=algorithm_name,
                        description=description,
                        ref_min_score=ref_min,
                        ref_max_score=ref_max,
                        author="trajplan",
                    )
                except Exception as exc:
                    raise TrajplanError(
                        f"cannot write dataset {dataset_id!r}: {_first_line(exc)}"
                    ) from None
            return _install(tmp, dataset_id, force)
    finally:
        env.close()


# -- downloading --------------------------------------------------------------------------------


def download_dataset(dataset_id: str, force: bool = False) -> list[Path]:
    """Fetch dataset(s) from Minari's remote (Hugging Face) into the local store.

    Needs the `hub` extra (`pip install 'trajplan[hub]'`) and network. Downloads are staged
    like `create_dataset`, so an interrupted download leaves nothing behind.
    """
    import minari

    ids = split_dataset_ids(dataset_id)
    try:
        import huggingface_hub  # noqa: F401  (Minari's default remote)
    except ImportError:
        raise TrajplanError(
            "downloading needs Minari's Hugging Face support: pip install 'trajplan[hub]'"
        ) from None
    paths = []
    for one in ids:
        if (datasets_root() / one).exists() and not force:
            paths.append(datasets_root() / one)
            continue
        with _staging_root() as tmp:
            with _minari_root(tmp):
                try:
                    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                        warnings.simplefilter("ignore")
                        minari.download_dataset(one, force_download=True)
                except Exception as exc:  # offline, unknown id, incompatible version
                    raise TrajplanError(
                        f"cannot download {one!r} (offline or not on Minari's remote?): "
                        f"{_first_line(exc)}"
                    ) from None
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    got = list(minari.list_local_datasets())
            for sub in got:  # the dataset plus any datasets it combines
                if sub == one or not (datasets_root() / sub).exists():
                    paths.append(_install(tmp, sub, force=force and sub == one))
    return paths
