"""The backend contract: what the CLI, the trainer and the evaluator may ask of a registry.

Two implementations: ``registry.backends.local.Wanlora`` (in-process: the services on a database and a
store, the embedded default) and ``registry.backends.remote.RemoteWanlora`` (the same calls against a
team server over HTTP, so a GPU box needs a token, not database credentials). ``open_backend``
(``registry.backends``) chooses one from the settings; mypy proves that both satisfy this contract.

Each ``registry()``, ``evaluation()``, ``accounts()`` and ``webhooks()`` is one unit of work: one
transaction in-process, plain requests over HTTP. Every method returns ``registry.domain`` shapes and
raises ``registry.domain.errors`` classes, whichever backend answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # annotations only: the contract loads none of the models it names
    from registry.blobs.base import ArtifactSource
    from registry.domain import eval_schemas as ev
    from registry.domain.accounts import TokenCreated, TokenPublic, UserPublic, UserRemoved
    from registry.domain.register import RegisterRequest
    from registry.domain.schemas import (
        EventPublic,
        FileMatch,
        GcReport,
        LoraPublic,
        LoraSummary,
        SyncTarget,
        VersionDiff,
        VersionPublic,
    )
    from registry.domain.webhooks import DeliveryPublic, PingResult, WebhookCreated, WebhookPublic

__all__ = [
    "AccountOps",
    "Backend",
    "EvaluationOps",
    "Progress",
    "RegistryOps",
    "SchemaStatus",
    "WebhookOps",
]

Progress = Callable[[str, int, int], None]  # label, bytes done, bytes in all


@dataclass(frozen=True)
class SchemaStatus:
    url: str  # without its password
    current: str | None
    head: str | None

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


class RegistryOps(Protocol):
    """The catalogue and the lifecycle."""

    def list_loras(
        self,
        *,
        project: str | None = None,
        category: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[LoraSummary]: ...

    def create_lora(
        self, *, project: str, name: str, category: str, base_model: str, trigger_words: Iterable[str] = (),
        description: str = "",
    ) -> LoraPublic: ...  # fmt: skip

    def get_lora(self, *, project: str, name: str) -> LoraPublic: ...

    def find_lora(self, *, project: str, name: str) -> LoraPublic | None: ...

    def get_version(self, *, project: str, name: str, version: str | None = None) -> VersionPublic: ...

    def which(
        self, *, sha256: str | None = None, payload_sha256: str | None = None, autov3: str | None = None
    ) -> list[FileMatch]: ...

    def promote(
        self, *, project: str, name: str, version: str, reason: str | None = None, override: bool = False
    ) -> VersionPublic: ...

    def rollback(self, *, project: str, name: str, reason: str | None = None) -> VersionPublic: ...

    def deprecate(self, *, project: str, name: str, version: str, reason: str | None = None) -> VersionPublic: ...

    def annotate(
        self, *, project: str, name: str, version: str, scores: Mapping[str, float] | None = None,
        known_issues: str | None = None,
    ) -> VersionPublic: ...  # fmt: skip

    def history(
        self, *, project: str, name: str | None = None, limit: int | None = None, before: int | None = None
    ) -> list[EventPublic]: ...

    def diff(self, *, project: str, name: str, old: str, new: str) -> VersionDiff: ...

    def notes(self, *, project: str, name: str) -> str: ...

    def current_targets(
        self, *, project: str | None = None, client: str | None = None, lora: str | None = None
    ) -> list[SyncTarget]: ...

    def preview(self, *, project: str, name: str, version: str, client: str | None = None) -> bytes | None: ...

    def last_event_id(self) -> int: ...

    def tagged_targets(self, *, project: str | None = None, client: str | None = None) -> tuple[str, list[SyncTarget]]:
        """``current_targets`` with a tag that changes whenever their answer may: the embedded
        registry's schema revision and event-log head, or the server's ETag for this caller."""
        ...


class EvaluationOps(Protocol):
    """The three phases' evidence, trials, host reports and monitoring."""

    def digest(self, *, project: str, name: str, version: str) -> str: ...

    def record(self, *, project: str, name: str, version: str, result: ev.EvaluationIn) -> ev.EvaluationPublic: ...

    def evaluations(self, *, project: str, name: str, version: str) -> list[ev.EvaluationPublic]: ...

    def gate(self, *, project: str, name: str, version: str) -> ev.GateStatus: ...

    def start_trial(
        self, *, project: str, name: str, version: str, share: float | None = None, reason: str | None = None
    ) -> ev.TrialPublic: ...

    def stop_trial(self, *, project: str, name: str, reason: str | None = None) -> ev.TrialPublic: ...

    def trial(self, *, project: str, name: str) -> ev.TrialPublic: ...

    def pick(self, *, project: str, name: str, key: str) -> ev.Pick: ...

    def report(self, *, project: str, name: str, version: str, outcome: ev.ReportIn) -> ev.TrialPublic | None: ...

    def metrics(self, *, project: str, name: str, days: float = 30) -> list[ev.Metrics]: ...

    def review(self, *, project: str | None = None) -> list[ev.ReviewItem]: ...

    def policy_for(self, *, project: str) -> dict[str, Any]: ...


class AccountOps(Protocol):
    def add_user(self, *, name: str) -> UserPublic: ...

    def list_users(self, *, removed: bool = False) -> list[UserPublic]: ...

    def remove_user(self, *, name: str) -> UserRemoved: ...

    def create_token(
        self, *, user: str, project: str, role: str, expires_in: timedelta | None = None
    ) -> TokenCreated: ...

    def list_tokens(self) -> list[TokenPublic]: ...

    def revoke_token(self, *, token_id: int) -> TokenPublic: ...


class WebhookOps(Protocol):
    def add(
        self, *, url: str, project: str, events: list[str], secret: str | None = None, timeout: float = 5.0
    ) -> WebhookCreated: ...

    def list_webhooks(self) -> list[WebhookPublic]: ...

    def remove(self, *, webhook_id: int) -> WebhookPublic: ...

    def test(self, *, webhook_id: int) -> PingResult: ...

    def deliveries(self, *, webhook_id: int | None = None, limit: int = 50) -> list[DeliveryPublic]: ...


class Backend(Protocol):
    @property
    def default_project(self) -> str: ...

    @property
    def store(self) -> ArtifactSource:
        """Where the versions' files are read from, verified by sha256."""
        ...

    def registry(self, *, write: bool = True) -> AbstractContextManager[RegistryOps]: ...

    def evaluation(self, *, write: bool = True) -> AbstractContextManager[EvaluationOps]: ...

    def accounts(self, *, write: bool = True) -> AbstractContextManager[AccountOps]: ...

    def webhooks(self, *, write: bool = True) -> AbstractContextManager[WebhookOps]: ...

    def register(self, req: RegisterRequest, *, progress: Progress | None = None) -> VersionPublic:
        """Inspect, store and record a new testing version; a refused registration leaves nothing."""
        ...

    def wait_for_change(self, since: int, *, timeout: float = 25.0, poll: float = 0.2) -> int:
        """The id of the newest event once the log has moved past ``since``, or after ``timeout``.
        Over HTTP a long poll of the server's change feed; in-process the log read every ``poll`` s."""
        ...

    def schema_status(self) -> SchemaStatus:
        """The database's schema revision and the one this wanlora needs (on the database's host)."""
        ...

    def upgrade_schema(self) -> tuple[str | None, str | None]:
        """Migrate the database to this wanlora's schema: (revision before, revision after)."""
        ...

    def gc(self, *, delete: bool = False, verify: bool = False) -> GcReport:
        """Sweep dead writers' temporary files; report artifacts no version refers to (and delete
        them with ``delete``); with ``verify``, hash every stored file and take those that fail out of
        service, marked for repair. On the server host only."""
        ...

    def repair(self, path: Path) -> list[str]:
        """Store ``path`` again where a stored copy failed its digest; the versions it repaired."""
        ...

    def pull_as(self, client: str | None) -> None:
        """Name the host that pulls (``sync --client-id``): a running trial's candidate is served only
        to the hosts in its share, so downloads carry the id the targets were resolved with."""
        ...

    def after_command(self) -> None:
        """Work a finished command leaves: in-process, one pass of webhook deliveries (no server
        delivers them); over HTTP nothing, the server does it."""
        ...

    def close(self) -> None: ...
