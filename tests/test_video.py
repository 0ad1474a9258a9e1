"""Video from eval and plan: real headless MuJoCo rendering into real files.

Needs a headless GL (EGL or OSMesa, see trajplan/envs/video.py) and the `video` extra. Without
them these tests skip, unless TRAJPLAN_REQUIRE_RENDERING=1 (CI sets it: .ci/run), where a
machine that cannot render fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from trajplan.envs.video import VideoRecorder, parse_episodes, prepare_rendering, render_failure
from trajplan.errors import TrajplanError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rendering() -> None:
    """Skip (or fail under TRAJPLAN_REQUIRE_RENDERING=1) where nothing can render."""
    required = os.environ.get("TRAJPLAN_REQUIRE_RENDERING") == "1"
    try:
        import imageio_ffmpeg  # noqa: F401

        prepare_rendering()
    except (ImportError, TrajplanError) as exc:
        if required:
            pytest.fail(f"the video extra is missing: {exc}")
        pytest.skip(f"the video extra is missing: {exc}")
    failure = render_failure("halfcheetah")
    if failure is not None:
        message = f"no headless GL with MUJOCO_GL={os.environ['MUJOCO_GL']} ({failure})"
        if required:
            pytest.fail(message)
        pytest.skip(message)


def read_frames(path: Path) -> list[np.ndarray]:
    import imageio.v2 as imageio

    return [np.asarray(f) for f in imageio.mimread(path, memtest=False)]


def test_eval_records_chosen_episodes(rendering: None, tiny_run: Path, tmp_path: Path) -> None:
    from trajplan.evaluation.evaluate import run_episodes
    from trajplan.runs import load_run

    ckpt = load_run(tiny_run, device="cpu")
    paths = {0: tmp_path / "ep0.mp4", 2: tmp_path / "ep2.gif"}
    rec = VideoRecorder(paths, fps=20)
    cam = rec.make_env("halfcheetah")
    try:  # the camera that follows the agent, not Gymnasium's fixed free camera
        assert cam.unwrapped.mujoco_renderer.camera_id >= 0
    finally:
        cam.close()
        del cam
    result = run_episodes(ckpt, n_episodes=3, seed=4, episode_steps=12, progress=False,
                          recorder=rec)  # fmt: skip
    assert sorted(rec.written) == sorted(paths.values()) and rec.frames == {0: 13, 2: 13}
    assert [e.length for e in result.episodes] == [12, 12, 12]
    for path in paths.values():
        frames = read_frames(path)
        assert len(frames) == 13  # the reset, then one frame per step
        assert frames[0].shape[-1] == 3
        assert min(f.mean() for f in frames) > 10  # no blank picture
        assert any(not np.array_equal(frames[0], f) for f in frames[1:])  # it moves
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written
    alone = run_episodes(ckpt, n_episodes=1, seed=6, episode_steps=12, progress=False)
    assert alone.episodes[0].rewards == result.episodes[2].rewards  # filming changes nothing


class Frames(VideoRecorder):
    """Keeps the frames in lists (`kept`) instead of writing files."""

    def __init__(self, episodes: list[int]) -> None:
        super().__init__({i: f"unused{i}.mp4" for i in episodes})
        self.kept: dict[int, list[np.ndarray]] = {i: [] for i in episodes}

    def _open(self, episode: int, fps: int) -> object:
        kept = self.kept[episode]

        class Writer:
            def append_data(self, frame: np.ndarray) -> None:
                kept.append(frame.copy())

        return Writer()


def test_envs_rendering_in_turn_keep_their_own_pictures(rendering: None) -> None:
    from trajplan.envs.video import release

    def film(names: list[str]) -> list[np.ndarray]:
        rec = Frames(list(range(len(names))))
        envs = [rec.make_env(n) for n in names]
        for i, e in enumerate(envs):
            e.reset(seed=i)
        for _ in range(3):
            for i, e in enumerate(envs):
                e.step(np.full(e.action_space.shape, 0.3))
                rec.capture(i, e)
        for e in envs:
            e.close()
        del envs, e
        release()
        return rec.kept[0]

    alone, together = film(["hopper"]), film(["hopper", "halfcheetah"])
    assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))


def test_cli_eval_and_plan_write_videos(rendering: None, tiny_run: Path, tmp_path: Path) -> None:
    from conftest import cli

    vids = tmp_path / "videos"
    args = ("eval", str(tiny_run), "--episodes", "2", "--episode-steps", "5", "--out",
            str(tmp_path / "ev"), "--video", str(vids), "--video-episodes", "1")  # fmt: skip
    cli(*args)
    assert len(read_frames(vids / tiny_run.name / "seed1.mp4")) == 6
    assert not (vids / tiny_run.name / "seed0.mp4").exists()
    plan_video = tmp_path / "plan.mp4"
    args = ("plan", "--checkpoint", str(tiny_run), "--max-steps", "4", "--threads", "1",
            "--out", str(tmp_path / "plan.json"), "--video", str(plan_video))  # fmt: skip
    planned = cli(*args)
    assert len(read_frames(plan_video)) == 5 and "5 frames" in planned.stdout
    bad = cli(*args[:-1], str(tmp_path / "plan.jpg"), code=2)
    assert "must end in one of .mp4" in bad.stderr


def test_video_episodes_are_checked() -> None:
    assert parse_episodes("2, 0", 3) == [0, 2]
    with pytest.raises(TrajplanError, match="between 0 and 2"):
        parse_episodes("3", 3)
    with pytest.raises(TrajplanError, match="comma-separated integers"):
        parse_episodes("first", 3)
