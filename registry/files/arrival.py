"""A file this process is still writing front to back (the server's upload), which ingest follows on
another thread: each read waits until the bytes it needs are on disk, so that the file is inspected,
checked, hashed and stored while the rest of it is still arriving."""

from __future__ import annotations

import threading
from typing import BinaryIO

from registry.domain.errors import InvalidFile
from registry.files.safetensors_io import MAX_HEADER_BYTES
from registry.files.source_digests import SourceDigests

__all__ = ["Abandoned", "Arrival"]


class Abandoned(Exception):
    """The file never arrived whole (the upload was refused or broken): whatever followed it stops."""


class Arrival:
    """The writer calls ``grew`` after each write, then ``finish`` with the whole file's digests once it
    checked them, or ``fail``; a reader calls ``wait(end)`` before reading below ``end``."""

    def __init__(self, size: int) -> None:
        self.size = size  # what the writer declared it will write (the upload's Content-Length)
        self._cond = threading.Condition()
        self._written = 0
        self._over = False
        self._digests: SourceDigests | None = None  # set by finish: the file is whole and checked

    def grew(self, n: int) -> None:
        with self._cond:
            self._written += n
            self._cond.notify_all()

    def finish(self, digests: SourceDigests) -> None:
        with self._cond:
            self._over, self._digests = True, digests
            self._cond.notify_all()

    def fail(self) -> None:
        with self._cond:
            if not self._over:
                self._over = True
                self._cond.notify_all()

    def has(self, end: int) -> bool:
        with self._cond:
            return self._written >= end

    def wait(self, end: int) -> None:
        """Return once the first ``end`` bytes are written; raise Abandoned if the file never comes whole,
        and InvalidFile if it was finished shorter than that."""
        with self._cond:
            while self._written < end and not self._over:
                self._cond.wait()
            if self._over and self._digests is None:
                raise Abandoned
            if self._written < end:
                raise InvalidFile(f"the file ended after {self._written:,} bytes; reading it needs {end:,}")

    def wait_for_header(self, fh: BinaryIO) -> None:
        """Wait until the safetensors header is there (or the whole file, where that is shorter); ``fh``
        is left at 0."""
        self.wait(min(9, self.size))
        declared = int.from_bytes(fh.read(8), "little")
        fh.seek(0)
        self.wait(min(self.size, 8 + min(declared, MAX_HEADER_BYTES)))

    def digests(self, stop: threading.Event | None = None) -> SourceDigests:
        """The whole file's digests, once the writer has finished and checked it."""
        with self._cond:
            while not self._over and not (stop is not None and stop.is_set()):
                self._cond.wait(0.05 if stop is not None else None)
            if self._digests is None:
                raise Abandoned
            return self._digests
