"""Dataset check: the guide's layout (``images/`` or ``videos/`` + ``captions/``, one ``.txt`` per file,
same stem), every sample opened and measured, every problem named, a summary and the dataset hash.

The hash is the registry's fingerprint (``registry.files.dataset``): order-independent, and it changes with
any byte of any image, video or caption.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.domain.errors import InvalidInput
from registry.files.dataset import IMAGE_SUFFIXES, VIDEO_SUFFIXES, dataset_fingerprint

__all__ = ["DatasetReport", "Sample", "check_dataset"]


@dataclass(frozen=True)
class Sample:
    stem: str
    path: Path
    kind: str  # "image" or "video"
    width: int
    height: int
    frames: int
    fps: float
    caption: str


@dataclass
class DatasetReport:
    root: Path
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dataset_hash: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def kind(self) -> str:
        kinds = {s.kind for s in self.samples}
        return kinds.pop() + "s" if len(kinds) == 1 else "mixed"

    def summary(self) -> dict[str, Any]:
        sizes = Counter(f"{s.width}x{s.height}" for s in self.samples)
        frames = [s.frames for s in self.samples]
        fps = sorted({round(s.fps, 2) for s in self.samples if s.kind == "video"})
        return {
            "samples": len(self.samples),
            "kind": self.kind,
            "resolutions": dict(sizes.most_common(5)),
            "frames": {"min": min(frames), "max": max(frames)} if frames else {},
            "fps": fps,
        }


def _probe_image(path: Path) -> tuple[int, int, int, float]:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()  # catches truncated and corrupt files without decoding twice
    with Image.open(path) as im:
        return im.width, im.height, 1, 0.0


def _probe_video(path: Path) -> tuple[int, int, int, float]:
    import av

    with av.open(str(path)) as container:
        stream = next((s for s in container.streams if s.type == "video"), None)
        if stream is None:
            raise ValueError("no video stream")
        frames = stream.frames or sum(1 for _ in container.decode(stream))
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        return stream.codec_context.width, stream.codec_context.height, frames, fps


def check_dataset(root: Path) -> DatasetReport:
    """Open every sample; collect every problem rather than stopping at the first."""
    root = Path(root)
    report = DatasetReport(root=root)
    present = [d for d in ("images", "videos") if (root / d).is_dir()]
    if not present or not (root / "captions").is_dir():
        raise InvalidInput(
            f"{root} is not a dataset folder",
            hint="expected images/ (or videos/) and captions/ with one .txt caption per file, same stem",
        )
    if len(present) == 2:
        report.problems.append("both images/ and videos/ are present: train on one kind at a time")
    stems: set[str] = set()
    for folder in present:
        suffixes, kind = (IMAGE_SUFFIXES, "image") if folder == "images" else (VIDEO_SUFFIXES, "video")
        for path in sorted((root / folder).iterdir()):
            if path.name.startswith("."):
                continue
            if path.suffix.lower() not in suffixes:
                other = "videos/" if kind == "image" else "images/"
                report.problems.append(f"{folder}/{path.name}: not a supported {kind} file (mixed media? use {other})")
                continue
            stems.add(path.stem)
            caption_path = root / "captions" / f"{path.stem}.txt"
            if not caption_path.is_file():
                report.problems.append(f"{folder}/{path.name}: no caption (captions/{path.stem}.txt is missing)")
                continue
            caption = caption_path.read_text(encoding="utf-8", errors="replace").strip()
            if not caption:
                report.problems.append(f"captions/{path.stem}.txt is empty: describe the content (and motion)")
                continue
            try:
                width, height, frames, fps = (_probe_image if kind == "image" else _probe_video)(path)
            except Exception as exc:  # any decoder error means the file cannot be trained on
                report.problems.append(f"{folder}/{path.name}: unreadable ({type(exc).__name__}: {exc})")
                continue
            report.samples.append(Sample(path.stem, path, kind, width, height, frames, fps, caption))
    for caption_path in sorted((root / "captions").glob("*.txt")):
        if caption_path.stem not in stems:
            report.problems.append(f"captions/{caption_path.name} has no image or video")
    if not report.samples and not report.problems:
        report.problems.append(f"{root} holds no samples")
    if report.samples and not report.problems:
        report.dataset_hash, _ = dataset_fingerprint(root)
    return report
