"""Dataset fingerprints: a hash that ignores file order and changes with any pixel or caption byte."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from registry.domain.digests import file_sha256
from registry.domain.errors import InvalidInput

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "dataset_fingerprint"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi"})


def dataset_fingerprint(root: Path) -> tuple[str, dict[str, Any]]:
    """(hash, summary) of a dataset laid out as ``images/`` or ``videos/`` plus ``captions/``.

    The hash is the sha256 of the sorted list of ``stem, media sha256, caption sha256`` lines, so it is
    independent of directory order and changes with any byte of any sample.
    """
    root = Path(root)
    media_dirs = [d for d in ("images", "videos") if (root / d).is_dir()]
    if not media_dirs or not (root / "captions").is_dir():
        raise InvalidInput(
            f"{root} is not a dataset folder",
            hint="expected images/ (or videos/) and captions/ with one .txt caption per file, same stem",
        )
    lines: list[str] = []
    kinds: set[str] = set()
    missing: list[str] = []
    for media_dir in media_dirs:
        suffixes = IMAGE_SUFFIXES if media_dir == "images" else VIDEO_SUFFIXES
        for media in sorted((root / media_dir).iterdir()):
            if media.suffix.lower() not in suffixes or not media.is_file():
                continue
            caption = root / "captions" / f"{media.stem}.txt"
            if not caption.is_file():
                missing.append(media.name)
                continue
            kinds.add(media_dir)
            lines.append(f"{media_dir}/{media.stem}\t{file_sha256(media)}\t{file_sha256(caption)}")
    if missing:
        raise InvalidInput(
            f"{len(missing)} sample(s) in {root} have no caption: {', '.join(missing[:5])}",
            hint="add captions/<stem>.txt for each file",
        )
    if not lines:
        raise InvalidInput(f"{root} holds no images or videos")
    lines.sort()
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    summary: dict[str, Any] = {"samples": len(lines), "kind": "+".join(sorted(kinds))}
    return f"sha256:{digest}", summary
