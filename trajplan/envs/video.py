"""Video of episodes: headless MuJoCo rendering, written frame by frame to mp4 or gif.

A `VideoRecorder` rides on a rollout (`trajplan.envs.rollout.rollout`): the rollout creates the
recorded episodes' envs with `recorder.make_env`, hands over the env after the reset and
after every step (`capture`), and calls `finish` when an episode ends. Frames stream into
the video file (a 1000-step episode is never held in memory) under a temporary name that is
renamed when the episode is complete.

Camera: Gymnasium's v5 MuJoCo envs, rendered with `render_mode="rgb_array"` and no camera
named, use a free camera at a fixed spot in Gymnasium 1.4 (HalfCheetah is filmed from above
its start and runs out of the picture; Hopper's `trackbodyid` has no effect on a free
camera). The recorder asks for the models' `track` camera instead, which follows the
agent's centre of mass whatever Gymnasium's default; mazes (no `track` camera) keep their
own, which shows the whole maze.

Headless OpenGL: MuJoCo renders through EGL (`MUJOCO_GL=egl`, the default set here) or
OSMesa (`MUJOCO_GL=osmesa`); on Debian `apt-get install libegl1 libegl-mesa0
libgl1-mesa-dri` or `libosmesa6`. A closed env's GL objects must be freed before another
env renders (Python's garbage collector may otherwise free them later inside the other
env's context and blank its frames), so `release` collects them right away; and envs filmed
side by side each make their own context current before they render.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trajplan.envs.registry import REGISTRY, make_env, resolve_env
from trajplan.errors import TrajplanError
from trajplan.runtime import check_writable

SUFFIXES = (".mp4", ".gif", ".webm", ".mkv", ".avi")
FOLLOW_CAMERA = "track"  # the camera of Gymnasium's MuJoCo models that follows the agent


def prepare_rendering() -> None:
    """Pick a headless OpenGL backend (EGL) unless MUJOCO_GL is set; check imageio is there."""
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401  # mp4 writing: imageio alone cannot
    except ImportError:
        raise TrajplanError(
            "--video needs imageio: pip install 'trajplan[video]' (imageio + imageio-ffmpeg)"
        ) from None
    if "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl"
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def check_suffix(path: Path) -> Path:
    """A video file name must end in one of SUFFIXES (the writer picks the format by it)."""
    if path.suffix.lower() not in SUFFIXES:
        raise TrajplanError(
            f"video file {path} must end in one of {', '.join(SUFFIXES)}, e.g. "
            f"{path.with_suffix('.mp4')}"
        )
    return path


def check_video_path(path: str | Path) -> Path:
    """A video file name with a known extension in a writable folder (checked before planning)."""

    path = check_suffix(Path(path))
    check_writable(path.parent, "video folder")
    return path


def release() -> None:
    """Free closed envs' GL objects now (see the module docstring)."""
    gc.collect()


def render_failure(env: str) -> str | None:
    """None when an rgb_array frame renders, else the exception's type name."""
    # A failing Gymnasium viewer also raises from __del__ when it is freed: keep that
    # "Exception ignored" noise out of the one-line error.
    hook = sys.unraisablehook
    sys.unraisablehook = lambda _: None
    try:
        e = make_env(env, seed=0, render_mode="rgb_array")
        try:
            e.render()
        finally:
            e.close()
            del e
    except TrajplanError:
        raise
    except Exception as exc:  # no EGL/OSMesa library, no GPU driver, ...
        return type(exc).__name__
    finally:
        release()
        sys.unraisablehook = hook
    return None


def check_rendering(env: str) -> None:
    """Render one frame now, so a missing GL backend fails before a long episode."""
    failure = render_failure(env)
    if failure is None:
        return
    backend = os.environ.get("MUJOCO_GL", "?")
    raise TrajplanError(
        f"cannot render headless with MUJOCO_GL={backend} ({failure}): install EGL (libegl1 "
        "libegl-mesa0 libgl1-mesa-dri) or OSMesa (libosmesa6) and set MUJOCO_GL=egl or "
        "MUJOCO_GL=osmesa"
    )


def parse_episodes(text: str, n_episodes: int) -> list[int]:
    """'0,2' -> [0, 2]: episode indices (0 = the first episode) within 0..n_episodes-1."""
    try:
        chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise TrajplanError(f"--video-episodes takes comma-separated integers: {text!r}") from None
    if not chosen or chosen[0] < 0 or chosen[-1] >= n_episodes:
        raise TrajplanError(
            f"--video-episodes {text!r}: pick episodes between 0 and {n_episodes - 1}"
        )
    return chosen


class VideoRecorder:
    """Records the episodes `paths` names (episode index -> video file) of one rollout.

    fps: frames per second of the files (default: the env's own, i.e. real time).
    """

    def __init__(self, paths: Mapping[int, str | Path], fps: int | None = None) -> None:
        self.paths = {int(i): check_suffix(Path(p)) for i, p in paths.items()}
        self.fps = fps
        self.frames: dict[int, int] = {}  # episode -> frames written so far
        self.written: list[Path] = []  # finished files
        self._writers: dict[int, Any] = {}

    def records(self, episode: int) -> bool:
        return episode in self.paths

    def make_env(self, env: str, max_episode_steps: int | None = None) -> Any:
        """An env that renders rgb_array frames, filmed by the camera following the agent."""
        info = resolve_env(env)
        camera = FOLLOW_CAMERA if info.name in REGISTRY and info.track_camera else None
        return make_env(env, render_mode="rgb_array", max_episode_steps=max_episode_steps,
                        camera=camera)  # fmt: skip

    def _tmp(self, episode: int) -> Path:
        path = self.paths[episode]
        return path.with_name(f".{path.stem}.tmp{path.suffix}")  # the suffix picks the format

    def capture(self, episode: int, env: Any) -> None:
        """Append env's current frame to the episode's video (no-op for other episodes)."""
        if episode not in self.paths:
            return
        viewer = getattr(getattr(env.unwrapped, "mujoco_renderer", None), "viewer", None)
        if viewer is not None:  # several envs render in turn: each into its own GL context
            viewer.make_context_current()
        frame = np.asarray(env.render())
        if episode not in self._writers:
            fps = self.fps or int(env.metadata.get("render_fps") or 30)
            self._writers[episode] = self._open(episode, fps)
            self.frames[episode] = 0
        self._writers[episode].append_data(frame)
        self.frames[episode] += 1

    def _open(self, episode: int, fps: int) -> Any:
        """An imageio writer for the episode's temporary file."""
        import imageio

        tmp = self._tmp(episode)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        timing = {"duration": 1000 / fps, "loop": 0} if tmp.suffix == ".gif" else {"fps": fps}
        return imageio.get_writer(tmp, **timing)

    def finish(self, episode: int) -> Path | None:
        """Close the episode's video and move it into place; its path (None if not recorded)."""
        writer = self._writers.pop(episode, None)
        if writer is None:
            return None
        writer.close()
        path = self.paths[episode]
        os.replace(self._tmp(episode), path)
        self.written.append(path)
        return path

    def close(self) -> None:
        """Drop the videos of episodes that did not finish (an interrupted rollout)."""
        for episode, writer in list(self._writers.items()):
            writer.close()
            self._tmp(episode).unlink(missing_ok=True)
        self._writers.clear()
