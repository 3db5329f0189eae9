"""Dataset check on real image and video files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("PIL")
pytest.importorskip("av")

from registry.domain.errors import InvalidInput
from trainer.dataset import check_dataset
from trainer.synthdata import make_image_dataset, make_video_dataset


def test_images_summary_and_hash(tmp_path: Path) -> None:
    root = make_image_dataset(tmp_path / "ds", count=5, size=48)
    report = check_dataset(root)
    assert report.ok and report.kind == "images"
    assert report.summary() == {
        "samples": 5,
        "kind": "images",
        "resolutions": {"48x48": 5},
        "frames": {"min": 1, "max": 1},
        "fps": [],
    }
    assert report.dataset_hash and report.dataset_hash.startswith("sha256:")


def test_videos_frames_and_fps(tmp_path: Path) -> None:
    root = make_video_dataset(tmp_path / "ds", count=2, size=32, frames=20, fps=24)
    report = check_dataset(root)
    assert report.ok, report.problems
    s = report.summary()
    assert s["kind"] == "videos" and s["frames"] == {"min": 20, "max": 20} and s["fps"] == [24.0]


def test_hash_ignores_order_and_sees_every_pixel_and_caption(tmp_path: Path) -> None:
    a = make_image_dataset(tmp_path / "a", count=4, size=32, seed=1)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    base = check_dataset(a).dataset_hash
    assert check_dataset(b).dataset_hash == base  # same content, another folder (and directory order)
    (b / "captions" / "002.txt").write_text("sarah, portrait 2, studio light, smiling")
    assert check_dataset(b).dataset_hash != base
    shutil.rmtree(b)
    shutil.copytree(a, b)
    from PIL import Image

    with Image.open(b / "images" / "001.png") as im:
        pixels = im.load()
        assert pixels is not None
        r, g, bl = pixels[3, 3]
        pixels[3, 3] = ((r + 1) % 256, g, bl)
        im.save(b / "images" / "001.png")
    assert check_dataset(b).dataset_hash != base


def test_every_problem_is_named(tmp_path: Path) -> None:
    root = make_image_dataset(tmp_path / "ds", count=4, size=32)
    (root / "captions" / "000.txt").unlink()
    (root / "captions" / "001.txt").write_text("   ")
    (root / "images" / "002.png").write_bytes(b"not a png")
    (root / "images" / "clip.mp4").write_bytes(b"")
    (root / "captions" / "ghost.txt").write_text("nobody")
    report = check_dataset(root)
    joined = "\n".join(report.problems)
    assert not report.ok and report.dataset_hash is None
    for expected in (
        "000.png: no caption",
        "001.txt is empty",
        "002.png: unreadable",
        "clip.mp4: not a supported image",
        "ghost.txt has no image",
    ):
        assert expected in joined, joined
    assert [s.stem for s in report.samples] == ["003"]


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a dataset folder"):
        check_dataset(tmp_path)


def test_cli_dataset_check(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from cli.main import app

    root = make_image_dataset(tmp_path / "ds", count=3, size=32)
    result = CliRunner().invoke(app, ["dataset", "check", str(root), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["summary"]["samples"] == 3
    (root / "captions" / "000.txt").unlink()
    result = CliRunner().invoke(app, ["dataset", "check", str(root)])
    assert result.exit_code == 1 and "no caption" in result.output
