"""The one error tree of wanlora.

    WanloraError                 (code "error")
    ├── NotFound                 ("not_found")       a project, LoRA, version or file does not exist
    ├── AlreadyExists            ("already_exists")  a name or version is taken, or a payload is registered
    ├── InvalidInput             ("invalid_input")   bad names, versions, hyperparameters, options
    │   └── InvalidFile          ("invalid_file")    a file that is not a safe, well-formed LoRA
    ├── Unauthenticated          ("unauthenticated") no, a bad, an expired or a revoked token
    ├── PermissionDenied         ("permission_denied") authenticated, but the role does not allow it
    ├── IntegrityError           ("integrity")       stored bytes do not match their digest
    ├── Conflict                 ("conflict")        a transition that is not legal from the current state
    │   └── GateRefused          ("gate_refused")    promotion without the evidence the policy requires
    ├── SchemaOutdated           ("schema_outdated") the database needs ``wanlora db upgrade``
    ├── Unavailable              ("unavailable")     the database (or another service) cannot be reached
    ├── OutOfSpace               ("out_of_space")    a disk (store, database, ComfyUI folder) is full
    └── CorruptArtifact          ("corrupt_artifact") a stored file fails its digest: never served

Every error carries a message that names the problem and, where there is one, a ``hint`` that names the
fix. ``cli/`` prints them; the HTTP layer maps ``code`` to a status in one table.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "Conflict",
    "CorruptArtifact",
    "GateRefused",
    "IntegrityError",
    "InvalidFile",
    "InvalidInput",
    "NotFound",
    "OutOfSpace",
    "PermissionDenied",
    "SchemaOutdated",
    "Unauthenticated",
    "Unavailable",
    "WanloraError",
    "out_of_space",
]


class WanloraError(Exception):
    code = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class NotFound(WanloraError):
    code = "not_found"


class AlreadyExists(WanloraError):
    code = "already_exists"


class InvalidInput(WanloraError):
    code = "invalid_input"


class InvalidFile(InvalidInput):
    code = "invalid_file"


class Unauthenticated(WanloraError):
    code = "unauthenticated"


class PermissionDenied(WanloraError):
    code = "permission_denied"


class IntegrityError(WanloraError):
    code = "integrity"


class Conflict(WanloraError):
    code = "conflict"


class SchemaOutdated(WanloraError):
    code = "schema_outdated"


class GateRefused(Conflict):
    """Promotion without the evidence the project's policy requires."""

    code = "gate_refused"


class Unavailable(WanloraError):
    code = "unavailable"


class OutOfSpace(WanloraError):
    code = "out_of_space"


class CorruptArtifact(WanloraError):
    code = "corrupt_artifact"


_FULL_ERRNOS = {28, 122}  # ENOSPC, EDQUOT
_FULL_MESSAGES = ("database or disk is full", "disk i/o error", "no space left on device", "could not extend file")


def out_of_space(exc: BaseException) -> OutOfSpace | None:
    """The clear error for a full disk, whichever layer raised it (an OSError from a write, SQLite's
    "database or disk is full" or "disk I/O error", PostgreSQL's "could not extend file"); None for
    anything else."""
    seen: BaseException | None = exc
    for _ in range(8):  # the error and what it wraps (SQLAlchemy keeps the driver's in .orig)
        if seen is None:
            break
        errno = getattr(seen, "errno", None)
        text = str(seen).lower()
        if errno in _FULL_ERRNOS or any(m in text for m in _FULL_MESSAGES):
            where = getattr(seen, "filename", None)
            place = f" ({where})" if where else ""
            return OutOfSpace(
                f"the disk is full{place}: the operation was stopped and nothing was half-written",
                hint="free space on that disk (or move the store with WANLORA_STORAGE_URL), then run the command again",
            )
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return None
