"""The local-folder artifact store: ``<root>/sha256/<ab>/<digest>``, written through fsynced temporary
files renamed into place."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from registry.blobs.base import (
    ArtifactSource,
    BackgroundHash,
    RecentlyVerified,
    VerifyingReader,
    check_digest,
    copy_range,
    fsync_dir,
    place_range,
    write_at,
)
from registry.blobs.writeback import Writeback
from registry.domain.errors import IntegrityError, NotFound

__all__ = ["LocalStore"]


class _LocalWriter:
    def __init__(self, store: LocalStore) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix=f"put-{_HOST}-{os.getpid()}-")
        self._tmp = Path(name)
        self._fh = os.fdopen(fd, "wb", buffering=0)
        self._hash = BackgroundHash()  # hashed on a side thread while the caller reads the next chunk
        self._copier: ThreadPoolExecutor | None = None  # the kernel copies of copy_from, one in flight
        self._copying: Future[None] | None = None
        self._writeback = Writeback(self._fh.fileno())  # on disk as it lands: the fsync at commit is short
        self._size = 0
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        self.settle()
        self._hash.update(data)
        view = memoryview(data)
        while view:
            written = self._fh.write(view)
            view = view[written:]
        self._size += len(data)
        self._writeback.landed(self._size)

    def copy_from(self, fd: int, offset: int, data: memoryview) -> None:
        """Append the bytes of ``fd`` at ``offset`` that the caller read as ``data`` (and leaves alone
        until its next call): the store hashes ``data`` and the kernel copies the range, so the bytes do
        not pass through Python a second time. Both run on side threads while the caller reads and
        checks the next range. The caller keeps ``fd`` open and unchanged until ``settle`` returns
        (ingest checks the source's identity after it)."""
        self.settle()
        self._hash.update(data, copy=False)
        if self._copier is None:
            self._copier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wanlora-copy")
        self._size += len(data)
        self._copying = self._copier.submit(self._copy, fd, offset, data, self._size)

    def place(self, fd: int, offset: int, length: int, at: int) -> None:
        """Copy ``fd``'s bytes ``offset:offset+length`` to position ``at`` of the file, from any thread and
        in any order, into a range the caller then passes over with ``skip``, hashing it in order."""
        place_range(fd, offset, length, self._fh.fileno(), at)
        self._writeback.placed(at, length)

    def put(self, data: memoryview, at: int) -> None:
        """Write ``data`` at position ``at``, as ``place`` does (for the bytes of a file still arriving,
        handed over before they were written anywhere else)."""
        write_at(self._fh.fileno(), data, at)
        self._writeback.placed(at, len(data))

    def read_into(self, view: memoryview, at: int) -> None:
        """Read back what ``put`` or ``place`` wrote at ``at``."""
        if os.preadv(self._fh.fileno(), [view], at) != len(view):
            raise IntegrityError(f"the stored file ends before {at + len(view):,} bytes", hint="run it again")

    def skip(self, data: memoryview) -> None:
        """The next ``len(data)`` bytes of the file are ``data``, placed there by ``place``: hash them (the
        caller leaves ``data`` alone until its next call) and append after them."""
        self.settle()
        self._hash.update(data, copy=False)
        self._size += len(data)
        os.lseek(self._fh.fileno(), self._size, os.SEEK_SET)

    def _copy(self, fd: int, offset: int, data: memoryview, end: int) -> None:
        copy_range(fd, offset, len(data), self._fh.fileno(), data)
        self._writeback.landed(end)

    def settle(self) -> None:
        """Wait for the copy in flight: after this, nothing reads a ``copy_from`` source (appends go in
        order, one at a time, so every write waits for it too)."""
        if self._copying is not None:
            copying, self._copying = self._copying, None
            copying.result()

    def _stop_copier(self) -> None:
        try:
            self.settle()
        finally:
            if self._copier is not None:
                self._copier.shutdown(wait=True)
                self._copier = None

    def commit(self) -> tuple[str, int, bool]:
        self._stop_copier()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        try:
            digest = self._hash.hexdigest()
        finally:
            self._hash.close()
        final = self._store.path(digest)
        created = not final.exists()
        if created:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self._tmp, 0o444)
            os.replace(self._tmp, final)
            fsync_dir(final.parent)
            self._store.remember(digest)  # hashed as it was written: no need to read it again to serve it
        else:  # the store has these bytes already: this copy goes, off the caller's time
            _discard_later(self._tmp)
        self._done = True
        return digest, self._size, created

    def abort(self) -> None:
        if not self._done:
            with contextlib.suppress(Exception):  # the failure being handled was raised where it happened
                self._stop_copier()
            self._hash.close()
            self._fh.close()
            self._tmp.unlink(missing_ok=True)
            self._done = True


class _HostVerified(RecentlyVerified):
    """``RecentlyVerified`` shared by the processes of one host (the server's workers, the CLI): each
    hash of a stored file is recorded in the host's folder (``verified/<sha256>``: the file's identity
    and when), so that another process does not hash the same unchanged file again within the window (a
    server's second worker would otherwise hash a file just registered through the first before it
    serves it). The identity holds the inode and the change time, which no write leaves as it was:
    a record vouches only for the very bytes that were hashed, and a record that is missing, unreadable
    or of another identity means the file is hashed again."""

    def __init__(self, folder: Path, reverify_seconds: float) -> None:
        super().__init__(reverify_seconds)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def remember(self, sha256: str, identity: object, *, age: float = 0.0) -> None:
        super().remember(sha256, identity, age=age)
        tmp = self.folder / f".{sha256}.{os.getpid()}.{threading.get_ident()}"
        try:
            record = {"identity": list(identity), "at": time.time() - age}  # type: ignore[call-overload]
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.folder / sha256)
        except (OSError, TypeError):
            tmp.unlink(missing_ok=True)  # only a cache: without it, the next process hashes the file again

    def check(self, store: ArtifactSource, sha256: str, identity: object) -> None:
        if not self.fresh(sha256, identity):
            age = self._recorded_age(sha256, identity)
            if age is not None:
                super().remember(sha256, identity, age=age)  # in memory only: the record is there
        super().check(store, sha256, identity)

    def _recorded_age(self, sha256: str, identity: object) -> float | None:
        try:
            with open(self.folder / sha256, "rb") as fh:
                raw = json.loads(fh.read(4096))
            recorded, at = tuple(raw["identity"]), float(raw["at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        age = time.time() - at
        return age if recorded == identity and 0 <= age < self.reverify_seconds else None

    def forget(self, sha256: str) -> None:
        super().forget(sha256)
        (self.folder / sha256).unlink(missing_ok=True)


def _discard_later(path: Path) -> None:
    """Remove a finished temporary file on a side thread: freeing a gigabyte of page cache takes a
    fifth of a second that whoever waits on the commit (an upload's answer) need not spend. The
    thread is no daemon, so an exiting process waits for it; one killed first leaves the file to the
    sweep of writers that are gone."""

    def unlink() -> None:
        with contextlib.suppress(OSError):
            path.unlink()

    threading.Thread(target=unlink, name="wanlora-discard").start()


_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"


def _writer_gone(name: str) -> bool:
    """Whether ``put-<host>-<pid>-…`` was written by a process of this host that no longer runs."""
    parts = name.split("-")
    if len(parts) < 4 or parts[1] != _HOST or not parts[2].isdigit():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


class LocalStore:
    """Objects at ``ROOT/sha256/ab/abcdef…``; temporary files at ``ROOT/tmp``."""

    STALE_TMP_SECONDS = 3600
    REVERIFY_SECONDS = 600.0  # an unchanged file served again is re-hashed at most this often

    def __init__(self, root: Path, *, verified_dir: Path | None = None) -> None:
        """``verified_dir``: where this host's processes share the hashes they made of stored files
        (``$WANLORA_HOME/verified``, the host's own folder, never the store: whoever may write into a
        shared store folder must not be able to write a record that vouches for bytes they changed).
        Without it, each process hashes a file before it first serves it."""
        self.root = root
        self.url = f"file://{root}"
        self.tmp_dir = root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._verified: RecentlyVerified = (
            _HostVerified(verified_dir, self.REVERIFY_SECONDS)
            if verified_dir is not None
            else RecentlyVerified(self.REVERIFY_SECONDS)
        )
        (root / "sha256").mkdir(exist_ok=True)
        self._sweep_stale_tmp()

    def _sweep_stale_tmp(self) -> int:
        """Remove what killed writers left behind: at once when the writer was a process of this host
        that has ended (its id is in the name), else once it is old enough that no live writer owns it."""
        cutoff = time.time() - self.STALE_TMP_SECONDS
        removed = 0
        for leftover in self.tmp_dir.glob("put-*"):
            try:
                if _writer_gone(leftover.name) or leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def sweep(self) -> int:
        return self._sweep_stale_tmp()

    def listing(self) -> Iterator[tuple[str, int, float]]:
        for path in (self.root / "sha256").glob("??/*"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if path.is_file() and len(path.name) == 64:
                yield path.name, st.st_size, st.st_mtime

    def quarantine(self, sha256: str) -> None:
        aside = self.root / "quarantine"
        aside.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path(sha256), aside / f"{sha256}.{int(time.time())}")
        self._verified.forget(sha256)

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

    def check(self, sha256: str) -> None:
        path = self.path(sha256)
        try:
            identity = self._identity(path)
        except FileNotFoundError:
            raise NotFound(f"artifact {sha256[:12]} is missing from the store at {self.root}") from None
        self._verified.check(self, sha256, identity)

    def _identity(self, path: Path) -> tuple[int, ...]:
        st = path.stat()
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def remember(self, sha256: str) -> None:
        self._verified.remember(sha256, self._identity(self.path(sha256)))

    def verified(self, sha256: str) -> Path:
        """The artifact's path, once ``check`` found its bytes sound."""
        self.check(sha256)
        return self.path(sha256)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"artifact {sha256[:12]} is not in the store") from None

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)
        self._verified.forget(sha256)
