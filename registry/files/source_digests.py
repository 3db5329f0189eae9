"""What is known of a source file's bytes before ingest reads them: its sha256 and AutoV3 (the data
section's sha256), worked out while the file was being written (the server's upload) or on a side
thread while the registry was still loading (the CLI's register), and the file identity that says
whether it is still that file."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from registry.blobs.base import CHUNK, check_digest
from registry.domain.errors import InvalidInput

__all__ = [
    "DataSectionHash",
    "EarlyHash",
    "SourceDigests",
    "early_digests",
    "file_identity",
    "hash_early",
    "hash_source",
]


def file_identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is rewritten, in place or by a rename over it."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class SourceDigests:
    """A source file's sha256 and AutoV3 (its data section's sha256), worked out while the file was
    written (the server's upload), with the file's identity then: ingest trusts them, instead of
    reading and hashing the file again, only while the file still has that identity."""

    sha256: str
    autov3: str
    identity: tuple[int, ...]

    def to_json(self) -> str:
        return json.dumps({"sha256": self.sha256, "autov3": self.autov3, "identity": list(self.identity)})

    @classmethod
    def read(cls, path: Path) -> SourceDigests | None:
        """The record at ``path``, or None when there is none or it is not one (then the file is hashed)."""
        try:
            raw = json.loads(path.read_bytes()[:4096])
            sha256, autov3 = check_digest(str(raw["sha256"])), check_digest(str(raw["autov3"]))
            return cls(sha256, autov3, tuple(int(v) for v in raw["identity"]))
        except (OSError, ValueError, KeyError, TypeError, InvalidInput):
            return None


class DataSectionHash:
    """The sha256 of a safetensors file's data section (AutoV3), fed the file front to back in pieces
    of any size: the first 8 bytes say where the data section starts."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self._head = bytearray()
        self._offset: int | None = None
        self._position = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if self._offset is None:
            self._head += view[: 8 - len(self._head)]
            if len(self._head) == 8:
                self._offset = 8 + int.from_bytes(self._head, "little")
        if self._offset is not None and self._position + len(view) > self._offset:
            self.hash.update(view[max(0, self._offset - self._position) :])
        self._position += len(view)

    def hexdigest(self) -> str | None:
        """None when the file is too short to say where its data starts."""
        return self.hash.hexdigest() if self._offset is not None and self._position >= self._offset else None


def hash_source(path: Path, stop: threading.Event | None = None) -> tuple[str, str]:
    """The file's sha256, and its data section's (after the header: Civitai's AutoV3), in one read;
    ``("", "")`` once ``stop`` is set."""
    whole, data = hashlib.sha256(), DataSectionHash()
    buffer = memoryview(bytearray(CHUNK))  # one buffer, read into again and again: no allocation per chunk
    with open(path, "rb", buffering=0) as fh:
        while stop is None or not stop.is_set():
            n = fh.readinto(buffer)
            if not n:
                return whole.hexdigest(), data.hexdigest() or ""
            whole.update(buffer[:n])
            data.update(buffer[:n])
    return "", ""


class EarlyHash:
    """One file hashed on a side thread: its digests, with its identity before and after the read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done = threading.Event()
        self.digests: SourceDigests | None = None

    def run(self) -> None:
        try:
            st = os.stat(self.path)
            if not stat.S_ISREG(st.st_mode):
                return  # a device or a pipe is refused by inspection; reading it here could never end
            before = file_identity(st)
            sha256, autov3 = hash_source(self.path)
            if file_identity(os.stat(self.path)) == before and autov3:  # one file throughout, and safetensors
                self.digests = SourceDigests(sha256, autov3, before)
        except OSError:
            pass  # not readable now: ingest reads it itself and reports what is wrong
        finally:
            self.done.set()


_EARLY: dict[Path, EarlyHash] = {}
_EARLY_LOCK = threading.Lock()


def hash_early(paths: Iterable[Path | None]) -> None:
    """Start hashing these files (one after the other) on a side thread, for ``ingest_lora`` of this
    process to use: the CLI's register starts it before it loads the registry, whose imports hold one
    core for a third of a second while this takes the other. A daemon thread: a command that fails
    first does not wait for it."""
    todo = []
    with _EARLY_LOCK:
        for path in paths:
            if path is not None and (key := Path(path).absolute()) not in _EARLY:
                _EARLY[key] = early = EarlyHash(key)
                todo.append(early)
    if todo:

        def run_all() -> None:
            for early in todo:
                early.run()

        threading.Thread(target=run_all, name="wanlora-early-hash", daemon=True).start()


def early_digests(path: Path) -> EarlyHash | None:
    """The early hashing of ``path`` that ``hash_early`` started in this process, or None. Its
    ``digests`` (once ``done`` is set) are usable only while the file still has their identity."""
    with _EARLY_LOCK:
        return _EARLY.get(Path(path).absolute())
