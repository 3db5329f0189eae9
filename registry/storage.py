"""Content-addressed artifact storage: immutable blobs named by their sha256.

One small contract (``ArtifactStore``) with a local-folder implementation; a store is chosen by URL
scheme in ``open_store`` and passed in, never looked up. Writes stream through a temporary file that is
hashed as it is written, fsynced and renamed into place, so a killed writer leaves no partial object.
Reads verify the digest when the stream ends.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlparse

from registry.errors import IntegrityError, InvalidInput, NotFound

__all__ = [
    "ArtifactSource",
    "ArtifactStore",
    "ArtifactWriter",
    "LocalStore",
    "VerifyingReader",
    "file_sha256",
    "fsync_dir",
    "open_store",
]

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


class _LocalWriter:
    def __init__(self, store: LocalStore) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="put-")
        self._tmp = Path(name)
        self._fh = os.fdopen(fd, "wb", buffering=0)
        self._hash = hashlib.sha256()
        self._size = 0
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        view = memoryview(data)
        while view:
            written = self._fh.write(view)
            view = view[written:]
        self._size += len(data)

    def commit(self) -> tuple[str, int, bool]:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        digest = self._hash.hexdigest()
        final = self._store.path(digest)
        created = not final.exists()
        if created:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self._tmp, 0o444)
            os.replace(self._tmp, final)
            fsync_dir(final.parent)
        else:
            self._tmp.unlink()
        self._done = True
        return digest, self._size, created

    def abort(self) -> None:
        if not self._done:
            self._fh.close()
            self._tmp.unlink(missing_ok=True)
            self._done = True


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class LocalStore:
    """Objects at ``ROOT/sha256/ab/abcdef…``; temporary files at ``ROOT/tmp``."""

    STALE_TMP_SECONDS = 3600

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"
        self.tmp_dir = root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        (root / "sha256").mkdir(exist_ok=True)
        self._sweep_stale_tmp()

    def _sweep_stale_tmp(self) -> None:
        """Remove what killed writers left behind (old enough that no live writer owns it)."""
        cutoff = time.time() - self.STALE_TMP_SECONDS
        for leftover in self.tmp_dir.glob("put-*"):
            try:
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
            except FileNotFoundError:
                pass

    def path(self, sha256: str) -> Path:
        check_digest(sha256)
        return self.root / "sha256" / sha256[:2] / sha256

    def writer(self) -> _LocalWriter:
        return _LocalWriter(self)

    def open(self, sha256: str) -> VerifyingReader:
        path = self.path(sha256)
        try:
            raw = open(path, "rb")  # noqa: SIM115 - closed by the reader
        except FileNotFoundError:
            raise NotFound(
                f"artifact {sha256[:12]} is missing from the store at {self.root}",
                hint="the store was pruned outside wanlora; register the version's source file again",
            ) from None
        return VerifyingReader(raw, sha256, os.fstat(raw.fileno()).st_size)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"artifact {sha256[:12]} is not in the store") from None

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)


def open_store(url: str, **s3_options: Any) -> ArtifactStore:
    """The store for a URL: ``file:///path`` (or a bare path) or ``s3://bucket/prefix`` (which alone
    takes ``s3_options``: endpoint_url, region, presign)."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return LocalStore(Path(parsed.path if parsed.scheme else url).expanduser())
    if parsed.scheme == "s3":
        try:
            from registry.s3 import S3Store
        except ImportError:
            raise InvalidInput("S3 storage needs boto3", hint="pip install 'wanlora[s3]'") from None
        return S3Store(url, **s3_options)
    raise InvalidInput(f"unsupported storage URL {url!r}", hint="use file:///path or s3://bucket/prefix")
