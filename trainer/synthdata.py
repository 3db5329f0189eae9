"""Small synthetic datasets in the guide's layout, for the tests and the demo (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["make_image_dataset", "make_video_dataset"]


def _frame(rng: np.random.Generator, size: int, shift: int = 0) -> np.ndarray:
    """A smooth, textured picture (so that blur and duplicate checks see real content)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    freq = rng.uniform(0.02, 0.12, 3)
    rgb = [127 + 100 * np.sin(freq[c] * (x + shift) + phase[c]) * np.cos(freq[c] * y) for c in range(3)]
    noise = rng.normal(0, 12, (size, size, 3))
    return np.clip(np.stack(rgb, axis=-1) + noise, 0, 255).astype(np.uint8)


def make_image_dataset(root: Path, count: int = 8, size: int = 64, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "captions").mkdir(exist_ok=True)
    for i in range(count):
        Image.fromarray(_frame(rng, size)).save(root / "images" / f"{i:03}.png")
        (root / "captions" / f"{i:03}.txt").write_text(f"sarah, portrait {i}, studio light, neutral expression")
    return root


def make_video_dataset(
    root: Path, count: int = 3, size: int = 64, frames: int = 30, fps: int = 30, seed: int = 0
) -> Path:
    import av

    rng = np.random.default_rng(seed)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "captions").mkdir(exist_ok=True)
    for i in range(count):
        with av.open(str(root / "videos" / f"{i:03}.mp4"), "w") as container:
            stream = container.add_stream("mpeg4", rate=fps)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            base = _frame(rng, size + frames * 2)
            for t in range(frames):  # a slow pan across the picture
                frame = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(base[:size, t * 2 : t * 2 + size]), format="rgb24"
                )
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        (root / "captions" / f"{i:03}.txt").write_text(f"watercolor scene {i}, smooth camera pan, soft colors")
    return root
