"""The server's uploads (``POST /api/v1/uploads``) and what is kept beside one until it is registered:
the digests the upload worked out as the file arrived, and the file as ingest stored it while it was
still arriving (``FollowedUpload``), so that registering the upload is mostly a transaction.

Once that ingest knows where each tensor goes, the upload puts those bytes straight into the stored
file and keeps only the rest (header, alphas) in its own: such a "routed" upload is kept under a dot
name (``.u_….routed``), never as the upload id itself, and registering it uses what ingest stored or
what ingest refused it for; it is never ingested again from the holes.

The records sit in the server's upload folder under dot names (never an upload id) and are trusted
only while the upload has the identity recorded with them: only the server writes that folder, and an
upload is used once."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from registry.blobs.base import ArtifactStore, check_digest
from registry.domain.errors import InvalidInput, WanloraError
from registry.domain.wan import BASE_MODELS, BaseModel
from registry.files.arrival import Abandoned, Arrival
from registry.files.ingest import IngestedFile, ingest_lora
from registry.files.source_digests import SourceDigests

__all__ = ["FollowedUpload", "KeptUpload", "UploadIngest", "UploadRefusal", "digests_path", "ingest_path",
           "refusal_path", "routed_path", "sweep_uploads"]  # fmt: skip

log = logging.getLogger("wanlora.uploads")

STALE_UPLOAD_SECONDS = 3600
_RECORDS = (".digests", ".ingested", ".refused")
_MAX_RECORD = 4096  # a record is a few digests


def digests_path(upload: Path) -> Path:
    """Where the upload's sha256 and AutoV3 are kept until it is registered."""
    return upload.with_name(f".{upload.name}.digests")


def ingest_path(upload: Path) -> Path:
    """Where what ingest stored of the upload, while it arrived, is kept until it is registered."""
    return upload.with_name(f".{upload.name}.ingested")


def refusal_path(upload: Path) -> Path:
    """Where why ingest refused a routed upload, as it arrived, is kept until it is registered."""
    return upload.with_name(f".{upload.name}.refused")


def routed_path(upload: Path) -> Path:
    """Where a routed upload (its tensors only in the stored file) is kept until it is registered."""
    return upload.with_name(f".{upload.name}.routed")


def _read_json(path: Path) -> Any:
    with open(path, "rb") as fh:
        return json.loads(fh.read(_MAX_RECORD))


@dataclass(frozen=True)
class UploadIngest:
    """An upload as ingest stored it while it arrived, checked against ``base_model``: the stored file
    and the digests, valid while the upload keeps ``identity``. What registering reports of the file
    besides (rank, alpha, metadata) comes from its own inspection of the whole file."""

    base_model: str
    identity: tuple[int, ...]
    sha256: str
    payload_sha256: str
    size: int
    source_sha256: str
    source_autov3: str
    created: bool  # the store did not hold these bytes before: a refused registration removes them

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def read(cls, path: Path) -> UploadIngest | None:
        """The record at ``path``, or None when there is none or it is not one (then registering ingests
        the file, or refuses a routed upload)."""
        try:
            raw = _read_json(path)
            if str(raw["base_model"]) not in BASE_MODELS or not isinstance(raw["size"], int):
                return None
            return cls(
                base_model=str(raw["base_model"]),
                identity=tuple(int(v) for v in raw["identity"]),
                sha256=check_digest(str(raw["sha256"])),
                payload_sha256=check_digest(str(raw["payload_sha256"])),
                size=raw["size"],
                source_sha256=check_digest(str(raw["source_sha256"])),
                source_autov3=check_digest(str(raw["source_autov3"])),
                created=raw["created"] is True,
            )
        except (OSError, ValueError, KeyError, TypeError, InvalidInput):
            return None


@dataclass(frozen=True)
class UploadRefusal:
    """Why ingest refused a routed upload as it arrived (what registering it reports), valid while the
    upload keeps ``identity``."""

    identity: tuple[int, ...]
    message: str
    hint: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def read(cls, path: Path) -> UploadRefusal | None:
        try:
            raw = _read_json(path)
            hint = raw["hint"]
            return cls(tuple(int(v) for v in raw["identity"]), str(raw["message"])[:2000],
                       None if hint is None else str(hint)[:2000])  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class KeptUpload:
    """An upload as registering finds it: the file to inspect (the routed one for a routed upload) and
    what was kept beside it."""

    path: Path
    routed: bool
    digests: SourceDigests | None
    ingested: UploadIngest | None
    refusal: UploadRefusal | None

    @classmethod
    def find(cls, upload: Path) -> KeptUpload | None:
        """The upload at ``upload`` (its id's path), as it was kept; None when there is none."""
        for path, routed in ((upload, False), (routed_path(upload), True)):
            if path.is_file():
                return cls(path, routed, SourceDigests.read(digests_path(upload)),
                           UploadIngest.read(ingest_path(upload)), UploadRefusal.read(refusal_path(upload)))  # fmt: skip
        return None

    @staticmethod
    def remove(upload: Path) -> None:
        """The upload at ``upload`` and all that was kept beside it: an upload is used once."""
        for path in (upload, routed_path(upload), digests_path(upload), ingest_path(upload), refusal_path(upload)):
            path.unlink(missing_ok=True)


class FollowedUpload:
    """Ingest of an upload on its own thread while the upload is written: the writer hands over each
    piece (``deliver``), then calls ``finish`` once the whole file's digest checked out, or ``fail``.
    Nothing is committed to the store before ``finish``; after ``fail`` nothing is kept. A file ingest
    refuses is not the upload's business: registering it reports why, as it would without this."""

    def __init__(self, store: ArtifactStore, path: Path, size: int, base: BaseModel) -> None:
        self.arrival = Arrival(size)
        self._store, self._path, self._base = store, path, base
        self._stored: IngestedFile | None = None
        self._refused: tuple[str, str | None] | None = None
        self._thread = threading.Thread(target=self._run, name="wanlora-upload-ingest", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._stored = ingest_lora(self._path, self._store, base=self._base, arrival=self.arrival)
        except Abandoned:
            pass  # a refused upload: nothing kept
        except WanloraError as exc:  # a file registering will refuse with this message
            self._refused = (exc.message, exc.hint)
        except Exception:  # never the upload's failure: registering ingests the file, or says to upload it again
            log.exception("ingest of upload %s as it arrived failed", self._path.name)
            self._refused = (f"the server could not store upload {self._path.name} as it arrived (its log says why)",
                             "upload the file again")  # fmt: skip

    @property
    def routed(self) -> bool:
        """Whether some of the upload went only to the stored file (the upload file has holes)."""
        return self.arrival.routed

    def deliver(self, fd: int, data: memoryview) -> None:
        self.arrival.deliver(fd, data)

    def fail(self) -> None:
        """The upload was refused or broken: stop, keep nothing, and return once the ingest has ended."""
        self.arrival.fail()
        self._thread.join()

    def finish(self, digests: SourceDigests) -> UploadIngest | UploadRefusal | None:
        """The upload is whole and checked: the ingest commits, and its record is returned, or why it
        refused the file (None where the upload was not routed: registering reads it again)."""
        self.arrival.finish(digests)
        self._thread.join()
        f = self._stored
        if f is None:
            return UploadRefusal(digests.identity, *self._refused) if self._refused and self.routed else None
        return UploadIngest(self._base.name, digests.identity, f.sha256, f.payload_sha256, f.size,
                            f.source_sha256, f.source_autov3, f.created)  # fmt: skip


def sweep_uploads(folder: Path, older_than: float = STALE_UPLOAD_SECONDS) -> list[str]:
    """Remove uploads nobody registered: partial ones of a killed request and finished ones left
    unused. A live upload is written to all along, so only files untouched for ``older_than`` go.
    What an unused upload's ingest stored is an orphan of the store: gc's grace period applies."""
    cutoff = time.time() - older_than
    removed = []
    for pattern in ("u_*", ".u_*.routed"):
        for path in folder.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path.name.removeprefix(".").removesuffix(".routed"))
    for suffix in _RECORDS:  # an upload's records, once it is gone
        for record in folder.glob(f".u_*{suffix}"):
            upload = record.with_name(record.name[1:].removesuffix(suffix))
            if not upload.exists() and not routed_path(upload).exists():
                record.unlink(missing_ok=True)
    return removed
