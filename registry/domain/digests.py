"""Digests: of a file, of a version's files, and the stable hash that draws a trial's share."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

__all__ = ["canary", "file_sha256", "files_digest"]

_CHUNK = 8 * 1024 * 1024


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def files_digest(files: Iterable[tuple[str, str]]) -> str:
    """The identity of a version's files: sha256 over its sorted ``role:sha256`` lines."""
    lines = sorted(f"{role}:{sha256}" for role, sha256 in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def canary(trial_id: int, key: str, share: float) -> bool:
    """Whether a job or client id falls in a trial's share: a stable hash, so the answer never changes
    for an id during a trial, and each trial draws its own share."""
    bucket = int.from_bytes(hashlib.sha256(f"{trial_id}:{key}".encode()).digest()[:8], "big") % 10_000
    return bucket < round(share * 100)


def targets_tag(revision: str | None, head: int) -> str:
    """An embedded registry's tag for what ``current_targets`` answers: its schema revision and event-log
    head (every change to a target appends an event). The full sync and its fast path
    (``registry.sync.quick``) both record it in this form."""
    return f"db:{revision or '-'}:{head}"
