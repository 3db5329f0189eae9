"""Database tables (sqlmodel). Rows stay inside ``registry/``; callers get ``registry.domain.schemas`` objects.

Invariants the database itself enforces (not only the code):
- at most one ``current`` version per LoRA: a partial unique index on ``versions(lora_id)`` where
  ``status = 'current'``;
- versions unique per LoRA, LoRA names unique per project, one file per role per version;
- the event log is append-only (triggers created by the migration refuse UPDATE and DELETE) and its
  per-LoRA sequence is gap-free and unique.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, DateTime, Index, LargeBinary, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel, col

from registry.domain.enums import Category, FileRole, Status

__all__ = [
    "ApiToken",
    "Evaluation",
    "EvaluationAttachment",
    "Event",
    "Lora",
    "Project",
    "Trial",
    "TrialReport",
    "User",
    "Version",
    "VersionFile",
    "VersionPreview",
    "WebSession",
    "Webhook",
    "WebhookDelivery",
]


def _in(column: str, enum: type[Enum]) -> str:
    return f"{column} IN ({', '.join(repr(m.value) for m in enum)})"


class Project(SQLModel, table=True):
    __tablename__ = "projects"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


class Lora(SQLModel, table=True):
    __tablename__ = "loras"
    __table_args__ = (
        UniqueConstraint("project_id", "name", name="uq_loras_project_name"),
        CheckConstraint(_in("category", Category), name="ck_loras_category"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="projects.id", index=True)
    name: str = Field(max_length=64)
    category: str = Field(max_length=16)
    base_model: str = Field(max_length=64)
    trigger_words: list[str] = Field(default_factory=list, sa_type=JSON)
    description: str = Field(default="", sa_type=Text)
    created_by: str = Field(max_length=128)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


# Partial unique indexes (one current version per LoRA, one running trial per LoRA). Their WHERE for
# PostgreSQL is attached by ``postgresql_partials()`` when a PostgreSQL database is opened: spelled in
# the table arguments, it would load SQLAlchemy's PostgreSQL dialect (~25 ms) in every SQLite process.
_PARTIAL_WHERE: dict[str, str] = {}


def _partial_unique(name: str, column: str, where: str) -> Index:
    _PARTIAL_WHERE[name] = where
    return Index(name, column, unique=True, sqlite_where=text(where))


def postgresql_partials() -> None:
    """Give the partial unique indexes their WHERE on PostgreSQL too (idempotent)."""
    for table in SQLModel.metadata.tables.values():
        for index in table.indexes:
            where = _PARTIAL_WHERE.get(index.name or "")
            if where is not None and index.dialect_kwargs.get("postgresql_where") is None:
                index.dialect_kwargs["postgresql_where"] = text(where)


class Version(SQLModel, table=True):
    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("lora_id", "version", name="uq_versions_lora_version"),
        CheckConstraint(_in("status", Status), name="ck_versions_status"),
        _partial_unique("uq_versions_one_current", "lora_id", "status = 'current'"),
    )

    id: int | None = Field(default=None, primary_key=True)
    lora_id: int = Field(foreign_key="loras.id", index=True)
    version: str = Field(max_length=64)
    major: int
    minor: int
    patch: int
    prerelease: str | None = Field(default=None, max_length=64)
    status: str = Field(max_length=16)
    changelog: str = Field(sa_type=Text)
    dataset_hash: str | None = Field(default=None, max_length=128)
    dataset_summary: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    hyperparameters: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    scores: dict[str, float] = Field(default_factory=dict, sa_type=JSON)
    known_issues: str = Field(default="", sa_type=Text)
    training_date: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    parent_id: int | None = Field(default=None, foreign_key="versions.id")
    created_by: str = Field(max_length=128)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


class VersionFile(SQLModel, table=True):
    __tablename__ = "version_files"
    __table_args__ = (
        UniqueConstraint("version_id", "role", name="uq_version_files_role"),
        CheckConstraint(_in("role", FileRole), name="ck_version_files_role"),
    )

    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="versions.id", index=True)
    role: str = Field(max_length=16)
    sha256: str = Field(max_length=64, index=True)
    payload_sha256: str = Field(max_length=64, index=True)
    size: int = Field(sa_type=BigInteger)
    rank: int
    alpha: float
    dtype: str = Field(max_length=16)
    key_format: str = Field(max_length=32)
    source_format: str = Field(max_length=32)
    source_sha256: str = Field(max_length=64, index=True)
    # sha256 of the source's data section (Civitai's AutoV3); None for versions registered before 0008
    source_autov3: str | None = Field(default=None, max_length=64, index=True)
    target_modules: list[str] = Field(default_factory=list, sa_type=JSON)
    module_count: int
    # the stored file failed its digest: taken out of service until `wanlora repair` stores it again
    needs_repair: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})


class Event(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("lora_id", "seq", name="uq_events_lora_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    lora_id: int = Field(foreign_key="loras.id", index=True)
    seq: int
    version_id: int | None = Field(default=None, foreign_key="versions.id")
    kind: str = Field(max_length=32)
    actor: str = Field(max_length=128)
    at: datetime = Field(sa_type=DateTime(timezone=True))
    from_status: str | None = Field(default=None, max_length=16)
    to_status: str | None = Field(default=None, max_length=16)
    reason: str | None = Field(default=None, sa_type=Text)
    evaluation_id: str | None = Field(default=None, max_length=64)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    created_by: str = Field(max_length=128)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    removed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))  # tokens revoked then


class ApiToken(SQLModel, table=True):
    """An API token: one role in one project ("*" = all). Only a hash of the secret is kept."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("role IN ('trainer', 'production', 'admin')", name="ck_api_tokens_role"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    project: str = Field(max_length=64)
    role: str = Field(max_length=16)
    created_by: str = Field(max_length=128)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_used_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class WebSession(SQLModel, table=True):
    """A dashboard sign-in: the browser holds a random secret in an HttpOnly cookie, the database only its
    sha256. A session stands on the token it was opened with (revoking the token ends it) or, for
    `wanlora dashboard` on the embedded default, on the local user (``token_id`` empty)."""

    __tablename__ = "web_sessions"

    id: int | None = Field(default=None, primary_key=True)
    secret_hash: str = Field(max_length=64, unique=True)
    token_id: int | None = Field(default=None, foreign_key="api_tokens.id", index=True)
    local_user: str | None = Field(default=None, max_length=128)
    csrf: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    expires_at: datetime = Field(sa_type=DateTime(timezone=True))
    ended_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Webhook(SQLModel, table=True):
    """A receiver of signed notifications for some event kinds of one project ("*" = all)."""

    __tablename__ = "webhooks"

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=2048)
    project: str = Field(max_length=64)
    events: list[str] = Field(default_factory=list, sa_type=JSON)
    secret: str = Field(max_length=128)  # the HMAC key; it must be kept to sign, and is shown once
    active: bool = True
    timeout_seconds: float = Field(default=5.0, sa_column_kwargs={"server_default": "5"})  # one attempt's budget
    created_by: str = Field(max_length=128)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


class WebhookDelivery(SQLModel, table=True):
    """The outbox and delivery log: written in the transaction of the change, delivered afterwards."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="ck_webhook_deliveries_status"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: int = Field(foreign_key="webhooks.id", index=True)
    event_id: int = Field(foreign_key="events.id")
    kind: str = Field(max_length=32)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    next_attempt_at: datetime = Field(sa_type=DateTime(timezone=True))
    delivered_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


def delivery_due(now: datetime) -> tuple[Any, ...]:
    """The conditions of a webhook delivery that waits for its next attempt at ``now``: what the
    dispatcher claims, and what the CLI's pass after a command looks for before it loads the sender."""
    return (col(WebhookDelivery.status) == "pending", col(WebhookDelivery.next_attempt_at) <= now)


class Evaluation(SQLModel, table=True):
    """The result of one evaluation phase for one version, bound to the digest of its files: evidence
    for a file is not evidence for another, even under the same version."""

    __tablename__ = "evaluations"
    __table_args__ = (
        CheckConstraint("phase IN ('technical', 'quality', 'trial')", name="ck_evaluations_phase"),
        Index("ix_evaluations_version_phase", "version_id", "phase"),
    )

    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="versions.id")
    phase: str = Field(max_length=16)
    digest: str = Field(max_length=64)  # sha256 over the version's (role, file sha256) pairs
    passed: bool
    summary: str = Field(default="", sa_type=Text)
    scores: dict[str, float] = Field(default_factory=dict, sa_type=JSON)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_by: str = Field(max_length=128)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))


class EvaluationAttachment(SQLModel, table=True):
    """What phase 2 leaves besides its numbers: the contact sheet (PNG) and ``report.md``, shown on the
    dashboard. Its own table, so that reading evaluations never loads images."""

    __tablename__ = "evaluation_attachments"

    evaluation_id: int = Field(foreign_key="evaluations.id", primary_key=True)
    name: str = Field(max_length=32, primary_key=True)  # contact.png, report.md
    media_type: str = Field(max_length=64)
    data: bytes = Field(sa_type=LargeBinary)


class VersionPreview(SQLModel, table=True):
    """A frame of the version's phase 2 contact sheet (PNG), which sync puts beside the files as the
    preview ComfyUI-Lora-Manager shows. Its own table, so that reading versions never loads images."""

    __tablename__ = "version_previews"

    version_id: int = Field(foreign_key="versions.id", primary_key=True)
    sha256: str = Field(max_length=64)
    png: bytes = Field(sa_type=LargeBinary)
    evaluation_id: int | None = Field(default=None, foreign_key="evaluations.id")


class Trial(SQLModel, table=True):
    """Phase 3: a candidate served to a sticky share of jobs, judged on the hosts' reports."""

    __tablename__ = "trials"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'passed', 'aborted', 'stopped')", name="ck_trials_status"),
        CheckConstraint("share >= 1 AND share <= 50", name="ck_trials_share"),
        _partial_unique("uq_trials_one_running", "lora_id", "status = 'running'"),
    )

    id: int | None = Field(default=None, primary_key=True)
    lora_id: int = Field(foreign_key="loras.id", index=True)
    version_id: int = Field(foreign_key="versions.id", index=True)
    baseline_id: int | None = Field(default=None, foreign_key="versions.id")  # the current at the start
    digest: str = Field(max_length=64)
    share: float
    status: str = Field(default="running", max_length=16)
    settings: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)  # the trial policy at the start
    outcome: str = Field(default="", sa_type=Text)
    started_by: str = Field(max_length=128)
    started_at: datetime = Field(sa_type=DateTime(timezone=True))
    ended_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class TrialReport(SQLModel, table=True):
    """One ComfyUI job's outcome with one version: what trials and the monthly review are judged on."""

    __tablename__ = "trial_reports"
    __table_args__ = (
        UniqueConstraint("version_id", "job_id", name="uq_trial_reports_job"),
        CheckConstraint("rating IS NULL OR (rating >= 1 AND rating <= 10)", name="ck_trial_reports_rating"),
        Index("ix_trial_reports_version_at", "version_id", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="versions.id")
    trial_id: int | None = Field(default=None, foreign_key="trials.id", index=True)
    job_id: str = Field(max_length=128)
    client_id: str | None = Field(default=None, max_length=128)
    success: bool
    rating: int | None = None
    seconds: float | None = None
    error: str | None = Field(default=None, sa_type=Text)
    reported_by: str = Field(max_length=128)
    at: datetime = Field(sa_type=DateTime(timezone=True))
