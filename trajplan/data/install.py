"""Installing datasets into Minari's local store: `create_dataset` (from episodes) and
`download_dataset` (from Minari's remote).

Writing is atomic: a dataset is built under a hidden temporary root next to the real one
(Minari reads the root from the environment variable on every call) and moved into place with
one rename, so a failure or a kill never leaves a half-written dataset where Minari would find
it. Reading, listing and describing datasets is `trajplan.data.store`'s.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from trajplan.data.store import (
    EPISODE_KEYS,
    check_dataset_id,
    datasets_root,
    first_line,
    minari_root,
    split_dataset_ids,
)
from trajplan.envs.registry import make_env, resolve_env
from trajplan.errors import TrajplanError
from trajplan.runtime import signals_held

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
    import fcntl

    root = datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(root)
    tmp = root / f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while in use; the kernel drops it on kill -9
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)


STAGING_PREFIX = ".trajplan-tmp-"


def remove_stale_staging(root: Path) -> list[Path]:
    """Remove the staging folders of writes that were killed (kill -9, a crash: the lock
    their process held is gone); one in use by another process stays. Returns those removed."""
    import fcntl

    removed = []
    for tmp in sorted(root.glob(f"{STAGING_PREFIX}*")):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # another process is writing there now
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
        finally:
            os.close(fd)
    return removed


# -- creating -----------------------------------------------------------------------------------


def _check_episode(i: int, ep: dict, obs_shape: tuple, act_shape: tuple) -> dict:
    missing = [k for k in EPISODE_KEYS if k not in ep]
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
    seeds: list[int | None] | None = None,
    ref_min: float | None = None,
    ref_max: float | None = None,
    algorithm_name: str | None = None,
    description: str | None = None,
    force: bool = False,
    env_kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """Write episodes as a local Minari dataset (HDF5) and return its directory.

    Each episode dict holds observations [T+1, o], actions [T, a], rewards [T],
    terminations [T], truncations [T]; a seed of None: an episode that began without a reset
    (mazes: the one after a goal). The env (a short name or Gymnasium id, made by
    `trajplan.envs.registry.make_env`: goal observations flat) gives the eval env spec, and
    with `env_kwargs` (the task the data was collected in) the env spec. Reference scores
    are stored only as a pair (alone, Minari would estimate ref_min with 100 random
    episodes). Built with `EpisodeBuffer` + `minari.create_dataset_from_buffers` (no JAX),
    staged and renamed into place atomically.
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

    gym_id = resolve_env(env_id).gym_id
    try:
        eval_spec = _eval_spec(env_id)
        env = make_env(env_id, env_kwargs=env_kwargs)
    except TrajplanError as exc:
        raise TrajplanError(f"cannot create env {gym_id}: {first_line(exc)}") from None
    try:
        obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
        buffers = []
        for i, ep in enumerate(episodes):
            ep = _check_episode(i, ep, obs_shape, act_shape)
            buffers.append(
                EpisodeBuffer(
                    seed=None if seeds is None or seeds[i] is None else int(seeds[i]),
                    observations=ep["observations"].astype(env.observation_space.dtype),
                    actions=ep["actions"].astype(env.action_space.dtype),
                    rewards=ep["rewards"],
                    terminations=ep["terminations"],
                    truncations=ep["truncations"],
                )
            )
        with _staging_root() as tmp:
            with minari_root(tmp), warnings.catch_warnings(), signals_held():
                warnings.simplefilter("ignore")  # author / permalink "recommended" notes
                try:
                    minari.create_dataset_from_buffers(
                        dataset_id,
                        buffers,
                        env=env,
                        eval_env=eval_spec,
                        algorithm_name=algorithm_name,
                        description=description,
                        ref_min_score=ref_min,
                        ref_max_score=ref_max,
                        author="trajplan",
                    )
                except Exception as exc:
                    raise TrajplanError(
                        f"cannot write dataset {dataset_id!r}: {first_line(exc)}"
                    ) from None
            return _install(tmp, dataset_id, force)
    finally:
        env.close()


def _eval_spec(env_id: str) -> gym.envs.registration.EnvSpec | None:
    """The spec of the env trajplan evaluates in for env_id (the registry's task)."""
    env = make_env(env_id)
    try:
        return env.spec
    finally:
        env.close()


# -- downloading --------------------------------------------------------------------------------


PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def check_remote_reachable(timeout_s: float = 5.0) -> None:
    """Minari's remote (the Hugging Face hub, or HF_ENDPOINT) answers a TCP connection; else
    one TrajplanError at once. Offline, the hub's client would retry for about half a
    minute and print each retry. Behind a proxy the client's own connection decides."""
    if any(os.environ.get(v) for v in PROXY_VARS):
        return
    url = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise TrajplanError(
            f"cannot reach Minari's remote {host}:{port} ({why}): offline? Datasets made on "
            "this machine need no download (trajplan data collect)"
        ) from None


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
    if not all((datasets_root() / one).exists() for one in ids) or force:
        check_remote_reachable()
    paths = []
    for one in ids:
        if (datasets_root() / one).exists() and not force:
            paths.append(datasets_root() / one)
            continue
        with _staging_root() as tmp:
            with minari_root(tmp):
                try:
                    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                        warnings.simplefilter("ignore")
                        minari.download_dataset(one, force_download=True)
                except Exception as exc:  # offline, unknown id, incompatible version
                    raise TrajplanError(
                        f"cannot download {one!r} (offline or not on Minari's remote?): "
                        f"{first_line(exc)}"
                    ) from None
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    got = list(minari.list_local_datasets())
            for sub in got:  # the dataset plus any datasets it combines
                if sub == one or not (datasets_root() / sub).exists():
                    paths.append(_install(tmp, sub, force=force and sub == one))
    return paths
