"""Content-addressed artifact storage: immutable blobs named by their sha256.

One small contract (``ArtifactStore``) with a local-folder implementation; a store is chosen by URL
scheme in ``open_store`` and passed in, never looked up. Writes stream through a temporary file that is
hashed as it is written, fsynced and renamed into place, so a killed writer leaves no partial object.
Reads verify the digest when the stream ends.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

from registry.domain.errors import IntegrityError, InvalidInput, NotFound

__all__ = ["CHUNK", "ArtifactSource", "ArtifactStore", "ArtifactWriter", "VerifyingReader", "check_digest", "fsync_dir"]

CHUNK = 8 * 1024 * 1024
_HEX = frozenset("0123456789abcdef")


def check_digest(sha256: str) -> str:
    if len(sha256) != 64 or not set(sha256) <= _HEX:
        raise InvalidInput(f"{sha256!r} is not a sha256 hex digest")
    return sha256


class ArtifactWriter(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...
    def commit(self) -> tuple[str, int, bool]:
        """Finish the object: (sha256, size, created), where created is False if it already existed."""
        ...

    def abort(self) -> None: ...


class ArtifactSink(Protocol):
    """What writing needs: a writer that names the object by its digest when it is committed."""

    def writer(self) -> ArtifactWriter: ...


class ArtifactSource(Protocol):
    """What reading needs: a verified stream by digest (a store, or a server for ComfyUI hosts)."""

    def open(self, sha256: str) -> VerifyingReader: ...


class ArtifactStore(Protocol):
    url: str

    def writer(self) -> ArtifactWriter: ...
    def open(self, sha256: str) -> VerifyingReader: ...
    def exists(self, sha256: str) -> bool: ...
    def size(self, sha256: str) -> int: ...
    def delete(self, sha256: str) -> None: ...
    def listing(self) -> Iterator[tuple[str, int, float]]:
        """Every stored artifact: (sha256, size, unix time it was stored)."""
        ...

    def sweep(self) -> int:
        """Remove temporary files of writers that are gone; how many were removed."""
        ...

    def quarantine(self, sha256: str) -> None:
        """Take an artifact out of service, keeping its bytes aside for inspection."""
        ...

    def check(self, sha256: str) -> None:
        """Raise IntegrityError unless the stored bytes match their digest (hashed again when they are
        new to this process, changed, or last hashed a while ago); NotFound when they are gone."""
        ...


class VerifyingReader:
    """A read stream that hashes what it returns and raises IntegrityError at the end on a mismatch."""

    def __init__(self, raw: BinaryIO, sha256: str, size: int) -> None:
        self._raw, self.sha256, self.size = raw, sha256, size
        self._hash = hashlib.sha256()
        self._seen = 0

    def read(self, n: int = CHUNK) -> bytes:
        data = self._raw.read(n)
        if data:
            self._hash.update(data)
            self._seen += len(data)
        elif self._hash is not None:
            self._verify()
        return data

    def _verify(self) -> None:
        digest = self._hash.hexdigest()
        if self._seen != self.size or digest != self.sha256:
            raise IntegrityError(
                f"stored artifact {self.sha256[:12]} is corrupt (read {self._seen} bytes, sha256 {digest[:12]})",
                hint="the store was modified outside wanlora; register the version's source file again",
            )

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> VerifyingReader:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_stored(store: ArtifactSource, sha256: str) -> str | None:
    """Hash a stored artifact in full: None when it matches its digest, else what is wrong with it."""
    try:
        reader = store.open(sha256)
        try:
            while reader.read(CHUNK):
                pass
        finally:
            reader.close()
    except (IntegrityError, NotFound) as exc:
        return exc.message
    return None


class RecentlyVerified:
    """The artifacts a process hashed lately, by identity (inode and times, or ETag): one that is new,
    changed since, or last hashed ``reverify_seconds`` ago is hashed again before it is served."""

    def __init__(self, reverify_seconds: float = 600.0) -> None:
        self.reverify_seconds = reverify_seconds
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[object, float]] = {}

    def remember(self, sha256: str, identity: object) -> None:
        """Bytes this process just wrote and hashed: sound as they are."""
        with self._lock:
            self._seen[sha256] = (identity, time.monotonic())

    def check(self, store: ArtifactSource, sha256: str, identity: object) -> None:
        with self._lock:
            hit = self._seen.get(sha256)
        if hit is not None and hit[0] == identity and time.monotonic() - hit[1] < self.reverify_seconds:
            return
        problem = verify_stored(store, sha256)
        if problem is not None:
            raise IntegrityError(problem, hint="an admin repairs it with `wanlora repair FILE` (the source file)")
        self.remember(sha256, identity)
