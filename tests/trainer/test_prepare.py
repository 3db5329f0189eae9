"""Dataset preparation: crops, clips of 4n+1 frames that respect scene cuts, fps conversion, filters."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")
av = pytest.importorskip("av")

from registry.domain.errors import InvalidInput  # noqa: E402
from trainer.dataset import check_dataset  # noqa: E402
from trainer.prepare import prepare_dataset  # noqa: E402
from trainer.synthdata import make_image_dataset, make_video_dataset  # noqa: E402


def write_video(path: Path, frames: list[np.ndarray], fps: int = 24) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 8_000_000
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_images_are_cropped_resized_and_filtered(tmp_path: Path) -> None:
    from PIL import Image

    src = make_image_dataset(tmp_path / "src", count=6, size=48)
    Image.new("RGB", (80, 48), (120, 120, 120)).save(src / "images" / "flat.png")  # no detail at all: blurred
    (src / "captions" / "flat.txt").write_text("a grey wall")
    shutil.copy(src / "images" / "002.png", src / "images" / "copy.png")  # a duplicate under another name
    (src / "captions" / "copy.txt").write_text("sarah again")
    report = prepare_dataset(src, tmp_path / "dst", resolution=64, filter_out=True)
    removed = {r["name"]: r["reasons"] for r in report.removed}
    assert set(removed) == {"flat", "copy"}
    assert removed["flat"][0].startswith("blur") and "near-duplicate" in removed["copy"][0]
    assert report.summary()["removed"] == 2 and report.removed_share == pytest.approx(2 / 8)
    out = check_dataset(tmp_path / "dst")
    assert out.ok and len(out.samples) == 6 and {(s.width, s.height) for s in out.samples} == {(64, 64)}


def test_videos_become_clips_of_4n_plus_1_frames_within_scenes(tmp_path: Path) -> None:
    src = make_video_dataset(tmp_path / "src", count=1, size=48, frames=30, fps=30)
    rng = np.random.default_rng(3)
    scene_a = [np.full((48, 48, 3), 40, np.uint8) + rng.integers(0, 30, (48, 48, 3), dtype=np.uint8) for _ in range(12)]
    scene_b = [
        np.full((48, 48, 3), 200, np.uint8) - rng.integers(0, 30, (48, 48, 3), dtype=np.uint8) for _ in range(12)
    ]
    write_video(src / "videos" / "cut.mp4", scene_a + scene_b)  # a hard cut at frame 12
    (src / "captions" / "cut.txt").write_text("two scenes")
    write_video(src / "videos" / "short.mp4", scene_a[:3])
    (src / "captions" / "short.txt").write_text("too short")
    report = prepare_dataset(src, tmp_path / "dst", resolution=32, frames=5, fps=24)
    out = check_dataset(tmp_path / "dst")
    assert out.ok and out.kind == "videos"
    assert {s.frames for s in out.samples} == {5} and {s.fps for s in out.samples} == {24.0}
    cut_clips = sorted(s.stem for s in out.samples if s.stem.startswith("cut"))
    assert cut_clips == ["cut_c00", "cut_c01", "cut_c02", "cut_c03"]  # 2 per scene: none spans the cut
    assert any(r["name"] == "short" and "too short" in r["reasons"][0] for r in report.removed)
    # 30 frames at 30 fps → 24 frames at 24 fps → 4 clips of 5
    assert sorted(s.stem for s in out.samples if s.stem.startswith("000")) == [f"000_c0{i}" for i in range(4)]


def test_lighting_jump_is_flagged(tmp_path: Path) -> None:
    src = make_video_dataset(tmp_path / "src", count=1, size=48, frames=10, fps=24)
    rng = np.random.default_rng(1)
    base = rng.integers(60, 120, (48, 48, 3), dtype=np.uint8)
    frames = [base] * 2 + [np.clip(base.astype(int) + 32, 0, 255).astype(np.uint8)] * 3  # a jump, not a cut
    write_video(src / "videos" / "flash.mp4", frames)
    (src / "captions" / "flash.txt").write_text("a flash")
    report = prepare_dataset(src, tmp_path / "dst", resolution=32, frames=5, fps=None, limits=None)
    flagged = {r["name"]: r["reasons"] for r in report.flagged}
    assert any("lighting jump" in reason for reason in flagged.get("flash_c00", [])), flagged


def test_refusals(tmp_path: Path) -> None:
    src = make_image_dataset(tmp_path / "src", count=2, size=32)
    with pytest.raises(InvalidInput, match="4n\\+1"):
        prepare_dataset(src, tmp_path / "a", resolution=512, frames=16)
    (tmp_path / "exists").mkdir()
    with pytest.raises(InvalidInput, match="exists"):
        prepare_dataset(src, tmp_path / "exists", resolution=512)


def test_camera_shake_is_flagged_and_a_smooth_pan_is_not(tmp_path: Path) -> None:
    from trainer.synthdata import _frame

    src = make_video_dataset(tmp_path / "src", count=1, size=48, frames=10, fps=24)  # a smooth pan
    big = _frame(np.random.default_rng(5), 96)
    rng = np.random.default_rng(9)
    shaky = []
    for _ in range(10):
        dy, dx = rng.integers(0, 16, 2)
        shaky.append(np.ascontiguousarray(big[20 + dy : 68 + dy, 20 + dx : 68 + dx]))
    write_video(src / "videos" / "shaky.mp4", shaky)
    (src / "captions" / "shaky.txt").write_text("handheld")
    report = prepare_dataset(src, tmp_path / "dst", resolution=48, frames=9, fps=None)
    reasons = {r["name"]: r["reasons"] for r in report.kept}
    assert any("camera shake" in r for r in reasons["shaky_c00"]), reasons
    assert not any("camera shake" in r for r in reasons["000_c00"]), reasons


def test_cli_prepare(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from cli.main import app

    src = make_image_dataset(tmp_path / "src", count=3, size=32)
    result = CliRunner().invoke(
        app, ["dataset", "prepare", str(src), str(tmp_path / "dst"), "--resolution", "512", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["kept"] == 3
    assert check_dataset(tmp_path / "dst").summary()["resolutions"] == {"512x512": 3}
