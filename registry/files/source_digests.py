"""What is known of a source file's bytes before ingest reads them: its sha256 and AutoV3 (the data
section's sha256), worked out while the file was being written (the server's upload), and the file
identity that says whether it is still that file."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from registry.blobs.base import check_digest
from registry.domain.errors import InvalidInput

__all__ = ["DataSectionHash", "SourceDigests", "file_identity"]


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
