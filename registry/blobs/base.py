"""Content-addressed artifact storage: immutable blobs named by their sha256.

One small contract (``ArtifactStore``) with a local-folder implementation; a store is chosen by URL
scheme in ``open_store`` and passed in, never looked up. Writes stream through a temporary file that is
hashed as it is written, fsynced and renamed into place, so a killed writer leaves no partial object.
Reads verify the digest when the stream ends.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol

from registry.domain.errors import IntegrityError, InvalidInput, NotFound

__all__ = [
    "CHUNK",
    "ArtifactSource",
    "ArtifactStore",
    "ArtifactWriter",
    "BackgroundHash",
    "VerifyingReader",
    "check_digest",
    "copy_hashed",
    "copy_in_kernel",
    "copy_range",
    "fsync_dir",
    "place_range",
    "write_at",
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


class Updatable(Protocol):
    def update(self, data: bytes, /) -> object: ...


class BackgroundHash:
    """A sha256 (or ``digest``, anything with ``update``) fed from a side thread, one chunk in flight
    (memory stays bounded): the caller reads and writes the next chunk while the last one is hashed.
    ``pool`` lends a thread; without one it keeps its own."""

    def __init__(self, pool: ThreadPoolExecutor | None = None, *, digest: Updatable | None = None) -> None:
        self.hash: Any = hashlib.sha256() if digest is None else digest
        self._own = pool is None
        self._pool = pool or ThreadPoolExecutor(max_workers=1, thread_name_prefix="wanlora-hash")
        self._pending: Future[None] | None = None

    def update(self, data: bytes | memoryview, *, copy: bool = True) -> None:
        """Hash ``data`` next. Bytes cannot change under the hasher; a view of someone's buffer might, so
        it is copied, unless ``copy=False``: the caller then leaves that buffer alone until its next
        ``update`` (or ``wait``) returns, by which time the hasher is done with it."""
        self.wait()
        self._pending = self._pool.submit(
            self.hash.update, data if copy is False or isinstance(data, bytes) else bytes(data)
        )

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def hexdigest(self) -> str:
        self.wait()
        return self.hash.hexdigest()

    def close(self) -> None:
        """Wait for the chunk in flight (its error, if any, is the caller's to have seen) and let the
        thread go."""
        try:
            self.wait()
        except Exception:  # closing after a failure: the failure was already raised where it happened
            pass
        finally:
            if self._own:
                self._pool.shutdown(wait=False)


class VerifyingReader:
    """A read stream that hashes what it returns and raises IntegrityError at the end on a mismatch.
    The hashing runs on a side thread (``BackgroundHash``) while the caller writes what it got and
    reads the next chunk."""

    def __init__(self, raw: BinaryIO, sha256: str, size: int) -> None:
        self._raw, self.sha256, self.size = raw, sha256, size
        self._hash = BackgroundHash()
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
        self.check(self._hash.hexdigest(), self._seen)

    def check(self, digest: str, size: int) -> None:
        """Raise IntegrityError unless ``digest`` and ``size`` (of this stream's bytes) are the stored ones
        (``self.size`` -1: not known ahead, the digest alone decides)."""
        if (self.size >= 0 and size != self.size) or digest != self.sha256:
            raise IntegrityError(
                f"stored artifact {self.sha256[:12]} is corrupt (read {size} bytes, sha256 {digest[:12]})",
                hint="the store was modified outside wanlora; register the version's source file again",
            )

    def local_fd(self) -> int | None:
        """The descriptor of the stream's local file when nothing has been read from it yet (what
        ``copy_in_kernel`` copies from), else None: a remote or partly read stream is read in chunks."""
        fileno = getattr(self._raw, "fileno", None)
        if self._seen or fileno is None:
            return None
        try:
            fd = int(fileno())
            if not stat.S_ISREG(os.fstat(fd).st_mode) or os.lseek(fd, 0, os.SEEK_CUR) != 0:
                return None
        except (OSError, ValueError):
            return None
        return fd

    def close(self) -> None:
        self._hash.close()
        self._raw.close()

    def __enter__(self) -> VerifyingReader:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


# copy_file_range refuses these for a pair of files it cannot copy between (another file system on an
# older kernel, a file system without it): the bytes are then copied through user space.
_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF})
_STEP = 64 * 1024 * 1024


def copy_in_kernel(src: int, dst: int, size: int, progress: Callable[[int], None] | None = None) -> None:
    """Copy ``size`` bytes from the start of ``src`` to ``dst`` with ``copy_file_range``: the kernel
    moves the pages (or shares them, on a file system with reflinks), nothing passes through Python.
    Where the kernel cannot, the same bytes go through Python a chunk at a time; memory stays flat."""
    done = 0
    kernel = hasattr(os, "copy_file_range")
    while done < size:
        if kernel:
            try:
                n = os.copy_file_range(src, dst, min(_STEP, size - done), done, done)
            except OSError as exc:
                if done or exc.errno not in _NO_KERNEL_COPY:
                    raise
                kernel = False
                continue
        else:
            n = _copy_chunk(src, dst, done, min(CHUNK, size - done))
        if n == 0:
            raise IntegrityError(f"the source ended after {done} of {size} bytes", hint="run it again")
        done += n
        if progress:
            progress(done)


def copy_range(src: int, offset: int, length: int, dst: int, data: bytes | memoryview) -> None:
    """Append ``src``'s bytes ``offset:offset+length`` to ``dst`` at its current position, the kernel
    copying them; ``data`` is the same bytes as the caller read them, written instead where the kernel
    cannot copy between the two files."""
    done = _kernel_copy(src, offset, length, dst, None)
    view = memoryview(data)[done:length]
    while view:
        view = view[os.write(dst, view) :]


def place_range(src: int, offset: int, length: int, dst: int, at: int) -> None:
    """Copy ``src``'s bytes ``offset:offset+length`` to ``dst`` at ``at`` (neither file's position
    moves), the kernel copying them where it can."""
    done = _kernel_copy(src, offset, length, dst, at)
    while done < length:
        data = os.pread(src, min(CHUNK, length - done), offset + done)
        if not data:
            raise IntegrityError(f"the source ended {length - done} bytes short", hint="run it again")
        write_at(dst, data, at + done)
        done += len(data)


def write_at(fd: int, data: bytes | memoryview, at: int) -> None:
    """All of ``data`` into ``fd`` at position ``at`` (the file's position does not move)."""
    view, done = memoryview(data), 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], at + done)


def _kernel_copy(src: int, offset: int, length: int, dst: int, at: int | None) -> int:
    """As much of the range as the kernel copies (to ``at``, or ``dst``'s position): all of it, or what
    it did before it said it cannot copy between these two files."""
    done = 0
    while done < length and hasattr(os, "copy_file_range"):
        try:
            n = os.copy_file_range(src, dst, length - done, offset + done, None if at is None else at + done)
        except OSError as exc:
            if exc.errno not in _NO_KERNEL_COPY:
                raise
            break
        if n == 0:
            raise IntegrityError(f"the source ended {length - done} bytes short", hint="run it again")
        done += n
    return done


def _copy_chunk(src: int, dst: int, offset: int, length: int) -> int:
    data = os.pread(src, length, offset)
    write_at(dst, data, offset)
    return len(data)


def _hash_range(fd: int, digest: Any, view: memoryview, start: int, end: int) -> int:
    """Feed ``fd``'s bytes ``start:end`` to ``digest``; returns where the file ended (``end`` or sooner)."""
    position = start
    while position < end:
        n = os.preadv(fd, [view[: min(len(view), end - position)]], position)
        if n == 0:
            break
        digest.update(view[:n])
        position += n
    return position


def copy_hashed(
    src: int, dst: int, size: int, progress: Callable[[int], None] | None = None, *, early_writeback: bool = False
) -> tuple[str, int]:
    """``copy_in_kernel``, and the sha256 and length of what landed in ``dst``: each step is read back
    from ``dst`` and hashed on a side thread while the kernel copies the next, so verifying the copy
    costs little more than hashing it. ``early_writeback``: the caller fsyncs ``dst`` next, so each
    step is handed to the disk as it lands (``registry.blobs.writeback``)."""
    from registry.blobs.writeback import Writeback

    digest, view = hashlib.sha256(), memoryview(bytearray(CHUNK))
    hashed = 0
    writeback = Writeback(dst) if early_writeback else None  # copy_in_kernel writes dst from its start
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="wanlora-verify") as pool:
        pending: Future[int] | None = None

        def step(done: int) -> None:
            nonlocal pending, hashed
            if pending is not None and pending.result() != hashed:  # one range in flight: one buffer
                raise IntegrityError("the copy is shorter than what was copied into it", hint="run it again")
            pending = pool.submit(_hash_range, dst, digest, view, hashed, done)
            hashed = done
            if writeback is not None:
                writeback.landed(done)
            if progress:
                progress(done)

        try:
            copy_in_kernel(src, dst, size, step)
        finally:
            landed = pending.result() if pending is not None else 0
    end = os.fstat(dst).st_size
    if landed < end:  # nothing should be there past what was copied; if it is, it counts
        landed = _hash_range(dst, digest, view, landed, end)
    return digest.hexdigest(), landed


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

    def remember(self, sha256: str, identity: object, *, age: float = 0.0) -> None:
        """Bytes hashed ``age`` seconds ago (this process just wrote and hashed them, by default):
        sound as they are."""
        with self._lock:
            self._seen[sha256] = (identity, time.monotonic() - age)

    def forget(self, sha256: str) -> None:
        """The artifact is gone or taken out of service: its next check hashes whatever is there."""
        with self._lock:
            self._seen.pop(sha256, None)

    def fresh(self, sha256: str, identity: object) -> bool:
        """Whether these bytes, as they are, were hashed within the window."""
        with self._lock:
            hit = self._seen.get(sha256)
        return hit is not None and hit[0] == identity and time.monotonic() - hit[1] < self.reverify_seconds

    def check(self, store: ArtifactSource, sha256: str, identity: object) -> None:
        if self.fresh(sha256, identity):
            return
        problem = verify_stored(store, sha256)
        if problem is not None:
            raise IntegrityError(problem, hint="an admin repairs it with `wanlora repair FILE` (the source file)")
        self.remember(sha256, identity)
