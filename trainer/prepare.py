"""Dataset preparation: centre-crop to square, resize, cut videos into clips of 4n+1 frames that do not
span a scene cut, convert the frame rate, and a quality report with the guide's filters.

Quality checks (each a reason a sample can be filtered out):
- blur: variance of the Laplacian of the grey image (of the sharpest frame, for a clip) below a threshold;
- lighting jump: mean brightness changing between two frames of a clip by more than a threshold;
- camera shake: the frame-to-frame motion of a clip changing direction and size erratically;
- near-duplicate: a perceptual hash (64-bit difference hash) within a few bits of a kept sample;
- too short: a video with fewer frames than one clip needs.
The guide's experience: filtering usually removes 30–50% of the material, and that is fine.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from registry.domain.errors import InvalidInput
from trainer.cache import square
from trainer.dataset import Sample, check_dataset

__all__ = ["PrepareReport", "Thresholds", "prepare_dataset"]


@dataclass(frozen=True)
class Thresholds:
    blur: float = 60.0  # variance of the Laplacian (0–255 grey) under which a frame is blurred
    lighting_jump: float = 25.0  # change of mean brightness between consecutive frames
    shake: float = 3.0  # standard deviation of frame-to-frame motion (pixels at 64×64)
    duplicate_bits: int = 5  # difference-hash bits within which two samples are near-duplicates
    scene_cut: float = 40.0  # mean absolute frame difference that starts a new scene


@dataclass
class Item:
    name: str
    source: str
    frames: list[np.ndarray]
    caption: str
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class PrepareReport:
    source: Path
    destination: Path
    kept: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    filtered: bool = False

    @property
    def flagged(self) -> list[dict[str, Any]]:
        """Everything a quality check flagged (written anyway unless the run filtered)."""
        return [r for r in self.kept + self.removed if r["reasons"]]

    @property
    def removed_share(self) -> float:
        total = len(self.kept) + len(self.removed)
        return len(self.removed) / total if total else 0.0

    def summary(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for item in self.flagged:
            for reason in item["reasons"]:
                reasons[reason.split(":")[0]] = reasons.get(reason.split(":")[0], 0) + 1
        return {
            "kept": len(self.kept),
            "removed": len(self.removed),
            "flagged": len(self.flagged),
            "removed_share": round(self.removed_share, 3),
            "reasons": reasons,
        }


def _grey(frame: np.ndarray) -> np.ndarray:
    return frame[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def laplacian_variance(frame: np.ndarray) -> float:
    g = _grey(frame)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var())


def dhash(frame: np.ndarray) -> int:
    from PIL import Image

    small = np.asarray(Image.fromarray(frame).convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def _motion(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Global shift between two frames by phase correlation (on a 64×64 grey thumbnail)."""
    from PIL import Image

    def thumb(f: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(f).convert("L").resize((64, 64)), dtype=np.float32)

    fa, fb = np.fft.fft2(thumb(a)), np.fft.fft2(thumb(b))
    cross = fa * np.conj(fb)
    corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-6)).real
    dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    return float(dy if dy < 32 else dy - 64), float(dx if dx < 32 else dx - 64)


def _video_frames(path: Path, fps: float | None) -> tuple[list[np.ndarray], float]:
    """Decoded RGB frames, resampled to ``fps`` by nearest timestamp (drops or repeats frames)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        source_fps = float(stream.average_rate or stream.guessed_rate or 24)
        decoded = [
            (float(f.time or i / source_fps), f.to_ndarray(format="rgb24"))
            for i, f in enumerate(container.decode(stream))
        ]
    if not decoded or fps is None or abs(fps - source_fps) < 1e-3:
        return [f for _, f in decoded], source_fps
    duration = decoded[-1][0] + 1 / source_fps
    times = np.array([t for t, _ in decoded])
    picks = [int(np.argmin(np.abs(times - k / fps))) for k in range(int(duration * fps))]
    return [decoded[i][1] for i in picks], fps


def _clips(frames: list[np.ndarray], length: int, cut: float) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Consecutive clips of ``length`` frames that never span a scene cut."""
    start = 0
    for i in range(1, len(frames) + 1):
        boundary = i == len(frames) or float(np.abs(_grey(frames[i]) - _grey(frames[i - 1])).mean()) > cut
        if boundary:
            for s in range(start, i - length + 1, length):
                yield s, frames[s : s + length]
            start = i


def _assess(item: Item, limits: Thresholds, kept_hashes: list[int]) -> None:
    sharpness = max(laplacian_variance(f) for f in item.frames)
    item.metrics["sharpness"] = round(sharpness, 1)
    if sharpness < limits.blur:
        item.reasons.append(f"blur: Laplacian variance {sharpness:.0f} < {limits.blur:g}")
    if len(item.frames) > 1:
        means = [float(_grey(f).mean()) for f in item.frames]
        jump = max(abs(a - b) for a, b in itertools.pairwise(means))
        item.metrics["lighting_jump"] = round(jump, 1)
        if jump > limits.lighting_jump:
            item.reasons.append(f"lighting jump: brightness changes by {jump:.0f} inside the clip")
        motions = np.array([_motion(a, b) for a, b in itertools.pairwise(item.frames)])
        shake = (
            float(
                np.linalg.norm(motions - motions.mean(axis=0), axis=1).std() + np.abs(np.diff(motions, axis=0)).mean()
            )
            if len(motions) > 1
            else 0.0
        )
        item.metrics["shake"] = round(shake, 2)
        if shake > limits.shake:
            item.reasons.append(f"camera shake: erratic frame-to-frame motion ({shake:.1f})")
    h = dhash(item.frames[len(item.frames) // 2])
    near = next((k for k in kept_hashes if bin(k ^ h).count("1") <= limits.duplicate_bits), None)
    if near is not None:
        item.reasons.append("near-duplicate of a sample already kept")
    else:
        kept_hashes.append(h)


def _write(item: Item, destination: Path, kind: str, fps: float) -> None:
    from PIL import Image

    (destination / "captions" / f"{item.name}.txt").write_text(item.caption + "\n")
    if kind == "images":
        Image.fromarray(item.frames[0]).save(destination / "images" / f"{item.name}.png")
        return
    import av

    with av.open(str(destination / "videos" / f"{item.name}.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=round(fps))
        stream.width = stream.height = item.frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 8_000_000
        for frame in item.frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def prepare_dataset(
    source: Path,
    destination: Path,
    *,
    resolution: int,
    frames: int = 17,
    fps: float | None = 24,
    filter_out: bool = False,
    limits: Thresholds | None = None,
) -> PrepareReport:
    """Prepare ``source`` into ``destination`` (which must not exist); with ``filter_out``, flagged
    samples are left out, else they are kept and only reported."""
    if resolution not in (512, 768, 1024) and resolution % 16:
        raise InvalidInput(f"resolution {resolution} is not a multiple of 16", hint="use 512, 768 or 1024")
    if frames != 1 and (frames - 1) % 4:
        raise InvalidInput(f"--frames {frames} is not 4n+1", hint="WAN's VAE needs 4n+1 frames: 17, 21 or 25")
    if destination.exists():
        raise InvalidInput(f"{destination} exists", hint="prepare into a new folder")
    limits = limits or Thresholds()
    check = check_dataset(source)
    if not check.samples:
        raise InvalidInput(f"{source} has no usable samples: " + "; ".join(check.problems[:5]))
    kind = "videos" if check.kind == "videos" else "images"
    report = PrepareReport(source, destination, filtered=filter_out)
    work = destination.with_name(destination.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    (work / kind).mkdir(parents=True)
    (work / "captions").mkdir()
    kept_hashes: list[int] = []
    out_fps = fps or 24.0
    for sample in check.samples:
        for item in _items(sample, kind, resolution, frames, fps, limits, report):
            _assess(item, limits, kept_hashes)
            record = {"name": item.name, "source": item.source, "reasons": item.reasons, **item.metrics}
            if item.reasons and filter_out:
                report.removed.append(record)
                continue
            report.kept.append(record)
            _write(item, work, kind, out_fps)
    work.rename(destination)  # all or nothing: a failed prepare leaves no half-written dataset
    return report


def _items(
    sample: Sample,
    kind: str,
    resolution: int,
    frames: int,
    fps: float | None,
    limits: Thresholds,
    report: PrepareReport,
) -> Iterator[Item]:
    if kind == "images":
        from PIL import Image

        with Image.open(sample.path) as im:
            yield Item(
                sample.stem, sample.path.name, [square(np.asarray(im.convert("RGB")), resolution)], sample.caption
            )
        return
    decoded, _ = _video_frames(sample.path, fps)
    clips = list(_clips(decoded, frames, limits.scene_cut))
    if not clips:
        report.removed.append(
            {
                "name": sample.stem,
                "source": sample.path.name,
                "reasons": [f"too short: {len(decoded)} frames, a clip needs {frames}"],
            }
        )
        return
    for n, (_, clip) in enumerate(clips):
        yield Item(f"{sample.stem}_c{n:02d}", sample.path.name, [square(f, resolution) for f in clip], sample.caption)
