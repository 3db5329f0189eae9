"""A file this process is still writing front to back (the server's upload), which ingest follows on
another thread: each read waits until the bytes it needs have arrived, so that the file is inspected,
checked, hashed and stored while the rest of it is still arriving.

Once ingest knows where each tensor goes in the stored file, it offers that map (a ``Placer``), and
from the next write on the writer puts those tensors' bytes straight into the stored file rather
than into its own: the file being written then keeps only what is not stored as it came (the header,
the alphas, tensors that are rescaled) and holes elsewhere. Such a file is "routed"; only what ingest
made of it is whole."""

from __future__ import annotations

import bisect
import itertools
import os
import threading
from typing import BinaryIO, Protocol

from registry.blobs.base import write_at
from registry.domain.errors import InvalidFile
from registry.files.modules import Row
from registry.files.safetensors_io import MAX_HEADER_BYTES, Header
from registry.files.source_digests import SourceDigests

__all__ = ["Abandoned", "Arrival", "Placer"]

PLACE_STEP = 8 * 1024 * 1024  # a tensor is placed this much at a time, as it arrives


class Abandoned(Exception):
    """The file never arrived whole (the upload was refused or broken): whatever followed it stops."""


class PlacingWriter(Protocol):
    """What a Placer needs of the store's writer (the local one): copies, writes and reads at a position."""

    def place(self, fd: int, offset: int, length: int, at: int) -> None: ...

    def put(self, data: memoryview, at: int) -> None: ...

    def read_into(self, view: memoryview, at: int) -> None: ...


class Arrival:
    """The writer calls ``deliver`` with each piece (or writes it and calls ``grew``), then ``finish``
    with the whole file's digests once it checked them, or ``fail``; a reader calls ``wait(end)``
    before reading below ``end``."""

    def __init__(self, size: int) -> None:
        self.size = size  # what the writer declared it will write (the upload's Content-Length)
        self._cond = threading.Condition()
        self._written = 0
        self._over = False
        self._digests: SourceDigests | None = None  # set by finish: the file is whole and checked
        self._route = threading.Lock()  # held while a piece is routed: withdraw waits for it
        self._placer: Placer | None = None
        self.routed = False  # some bytes went to the stored file only: the written file has holes

    def deliver(self, fd: int, data: memoryview) -> None:
        """Write the next piece: where ingest offered a Placer, the bytes of tensors stored as they are
        go straight to their place in the stored file, and only the rest to ``fd`` (at its offsets)."""
        at = self._written  # only this thread writes: no lock needed to read it
        with self._route:
            pieces: list[tuple[int, memoryview]] = [(at, data)]
            if self._placer is not None:
                pieces, routed = self._placer.route(at, data)
                self.routed = self.routed or routed > 0
        for offset, piece in pieces:
            write_at(fd, piece, offset)
        if self.routed and (not pieces or pieces[-1][0] + len(pieces[-1][1]) < at + len(data)):
            os.ftruncate(fd, at + len(data))  # the file keeps its length: a hole where its tail was routed
        self.grew(len(data))

    def offer(self, placer: Placer) -> None:
        with self._route:
            self._placer = placer

    def withdraw(self) -> None:
        """No piece is routed after this returns (one in flight is finished first)."""
        with self._route:
            self._placer = None

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
    """Gets the tensors of an arriving file that are stored as they are to their places in the stored
    file. ``jobs`` are (offset in the source, length, position in the stored file). Until the writer
    routes its first piece (``route``), what arrived is copied from the source on the Placer's own
    thread, in the order it arrives; from that piece on, the writer puts those bytes there itself.
    Ingest hashes the stored file in its own order, which is not always the order the source arrives
    in, and reads each range where it is (``read``)."""

    def __init__(self, arrival: Arrival, fd: int, writer: PlacingWriter, jobs: list[tuple[int, int, int]]) -> None:
        self._arrival, self._fd, self._writer = arrival, fd, writer
        self._jobs = sorted(jobs)
        self._starts = [offset for offset, _, _ in self._jobs]
        self._routed_from: int | None = None  # the first byte the writer routed; set once, before it arrives
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="wanlora-place", daemon=True)
        self._thread.start()
        arrival.offer(self)

    @classmethod
    def of(
        cls, arrival: Arrival | None, fd: int, writer: object, header: Header, layout: list[Row], at: int
    ) -> Placer | None:
        """A Placer of every tensor of ``layout`` stored as it is, to where it goes in the stored file,
        whose data section starts at ``at``; None unless the file is still arriving and the store's
        ``writer`` can place ranges (the local one)."""
        if arrival is None or not all(hasattr(writer, m) for m in ("place", "put", "read_into")):
            return None
        jobs = []
        for row in layout:
            if row.copied and row.src is not None and row.nbytes:
                jobs.append((header.data_offset + row.src.start, row.nbytes, at))
            at += row.nbytes
        jobs.sort()
        if any(a + n > b for (a, n, _), (b, _, _) in itertools.pairwise(jobs)):
            return None  # a source range stored twice: copied in the stored order instead
        return cls(arrival, fd, writer, jobs)  # type: ignore[arg-type]

    def _job(self, offset: int) -> int:
        """The index of the job whose range holds ``offset``, or of the first one after it."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0 and offset < self._jobs[i][0] + self._jobs[i][1]:
            return i
        return i + 1

    def route(self, at: int, data: memoryview) -> tuple[list[tuple[int, memoryview]], int]:
        """The writer's piece at ``at``: the bytes of jobs are put in the stored file; returned are the
        rest, (offset, bytes) for the source file, and how many bytes were routed."""
        if self._routed_from is None:
            self._routed_from = at
        rest, routed, pos, end = [], 0, at, at + len(data)
        i = self._job(at)
        while pos < end:
            if i >= len(self._jobs) or self._jobs[i][0] >= end:
                rest.append((pos, data[pos - at :]))
                break
            offset, length, target = self._jobs[i]
            if offset > pos:
                rest.append((pos, data[pos - at : offset - at]))
                pos = offset
            stop = min(end, offset + length)
            self._writer.put(data[pos - at : stop - at], target + pos - offset)
            routed += stop - pos
            pos, i = stop, i + 1
        return rest, routed

    def read(self, view: memoryview, offset: int) -> None:
        """Fill ``view`` with the arrived source bytes at ``offset`` (all within one job): from the
        source where they were written there, from the stored file where they were routed."""
        split = self._routed_from if self._routed_from is not None else offset + len(view)
        split = max(offset, min(split, offset + len(view)))
        if split > offset and os.preadv(self._fd, [view[: split - offset]], offset) != split - offset:
            raise InvalidFile("the file shrank while it was being read")
        if split < offset + len(view):
            job_offset, _, target = self._jobs[self._job(split)]
            self._writer.read_into(view[split - offset :], target + split - job_offset)

    def _run(self) -> None:
        try:
            for offset, length, at in self._jobs:
                done = 0
                while done < length:
                    n = min(PLACE_STEP, length - done)
                    self._arrival.wait(offset + done + n, self._stop)
                    if self._routed_from is not None:  # set before these bytes arrived, if at all
                        n = min(n, self._routed_from - offset - done)
                        if n <= 0:
                            return  # the writer put the rest where it goes
                    self._writer.place(self._fd, offset + done, n, at + done)
                    done += n
        except BaseException as exc:  # reported by join
            self._error = exc

    def join(self) -> None:
        """Wait until every range is placed; raise what stopped it."""
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stop within one step and return once nothing more is written, by the Placer or routed by
        the writer (before the files are closed)."""
        self._arrival.withdraw()
        self._stop.set()
        self._thread.join()
