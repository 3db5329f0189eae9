"""A file this process is still writing front to back (the server's upload), which ingest follows on
another thread: each read waits until the bytes it needs are on disk, so that the file is inspected,
checked, hashed and stored while the rest of it is still arriving."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import BinaryIO

from registry.domain.errors import InvalidFile
from registry.files.modules import Row
from registry.files.safetensors_io import MAX_HEADER_BYTES, Header
from registry.files.source_digests import SourceDigests

__all__ = ["Abandoned", "Arrival", "Placer"]

PLACE_STEP = 8 * 1024 * 1024  # a tensor is placed this much at a time, as it arrives


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

    def wait(self, end: int, stop: threading.Event | None = None) -> None:
        """Return once the first ``end`` bytes are written; raise Abandoned if the file never comes whole
        (or ``stop`` is set), and InvalidFile if it was finished shorter than that."""
        with self._cond:
            while self._written < end and not self._over:
                if stop is not None and stop.is_set():
                    raise Abandoned
                self._cond.wait(0.05 if stop is not None else None)
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


class Placer:
    """Copies ranges of an arriving file to their places in another, on its own thread, in the order
    they arrive: ``jobs`` are (offset in the source, length, position in the target), and ``place``
    copies one (the store writer's). Ingest hashes the stored file in its own order, which is not
    always the order the source arrives in; the copying need not wait for that."""

    def __init__(
        self, arrival: Arrival, fd: int, place: Callable[[int, int, int, int], None], jobs: list[tuple[int, int, int]]
    ) -> None:
        self._arrival, self._fd, self._place = arrival, fd, place
        self._jobs = sorted(jobs)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="wanlora-place", daemon=True)
        self._thread.start()

    @classmethod
    def of(
        cls, arrival: Arrival | None, fd: int, writer: object, header: Header, layout: list[Row], at: int
    ) -> Placer | None:
        """A Placer of every tensor of ``layout`` stored as it is, to where it goes in the stored file,
        whose data section starts at ``at``; None unless the file is still arriving and the store's
        ``writer`` can place ranges (the local one)."""
        place = getattr(writer, "place", None)
        if arrival is None or place is None:
            return None
        jobs = []
        for row in layout:
            if row.copied and row.src is not None:
                jobs.append((header.data_offset + row.src.start, row.nbytes, at))
            at += row.nbytes
        return cls(arrival, fd, place, jobs)

    def _run(self) -> None:
        try:
            for offset, length, at in self._jobs:
                done = 0
                while done < length:
                    n = min(PLACE_STEP, length - done)
                    self._arrival.wait(offset + done + n, self._stop)
                    self._place(self._fd, offset + done, n, at + done)
                    done += n
        except BaseException as exc:  # reported by join
            self._error = exc

    def join(self) -> None:
        """Wait until every range is placed; raise what stopped it."""
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stop within one step and return once nothing more is written (before the files are closed)."""
        self._stop.set()
        self._thread.join()
