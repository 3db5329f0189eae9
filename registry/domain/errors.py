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
    └── SchemaOutdated           ("schema_outdated") the database needs ``wanlora db upgrade``

Every error carries a message that names the problem and, where there is one, a ``hint`` that names the
fix. ``cli/`` prints them; the HTTP layer maps ``code`` to a status in one table.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "Conflict",
    "GateRefused",
    "IntegrityError",
    "InvalidFile",
    "InvalidInput",
    "NotFound",
    "PermissionDenied",
    "SchemaOutdated",
    "Unauthenticated",
    "WanloraError",
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
