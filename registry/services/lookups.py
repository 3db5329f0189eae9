"""The lookups every service shares: rows by name (with the caller's visibility), the event log, and
status changes. Rows never leave ``registry.services``; ``views`` turns them into public shapes.

A version whose status the caller may not read does not exist for it (``NotFound``).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import semver
from sqlalchemy import func
from sqlmodel import col, select

from registry.db.tables import Event, Lora, Project, Version, VersionFile
from registry.domain.access import Action
from registry.domain.clock import utcnow
from registry.domain.enums import FileRole, Status
from registry.domain.errors import NotFound
from registry.domain.schemas import check_name, parse_semver
from registry.services.scope import Scope
from registry.services.webhooks import enqueue as enqueue_webhooks

__all__ = [
    "current_rows",
    "current_version",
    "events_of",
    "files_of",
    "lora_and_version",
    "lora_row",
    "project_row",
    "record_event",
    "retired_ids",
    "set_status",
    "version_row",
    "version_semver",
    "versions_of",
]


def version_semver(v: Version) -> semver.Version:
    return semver.Version(v.major, v.minor, v.patch, v.prerelease)


def did_you_mean(name: str, candidates: list[str]) -> str:
    """ " (did you mean 'sarah'?)" for the nearest of ``candidates``, or ""."""
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def project_row(scope: Scope, name: str, *, create: bool = False) -> Project:
    check_name(name, "project name")
    row = scope.session.exec(select(Project).where(Project.name == name)).first()
    if row is None:
        if not create:
            known = [p for p in scope.session.exec(select(Project.name)).all() if scope.can(p, Action.LORA_READ)]
            raise NotFound(
                f"project {name!r} does not exist{did_you_mean(name, known)}",
                hint=f"projects you can read: {', '.join(sorted(known)) or 'none yet'}",
            )
        row = Project(name=name, created_at=utcnow())
        scope.session.add(row)
        scope.session.flush()
    return row


def lora_row(scope: Scope, project: str, name: str, *, lock: bool = False) -> tuple[Project, Lora]:
    """The LoRA, locked (``SELECT … FOR UPDATE``) when the caller is about to change it."""
    proj = project_row(scope, project)
    check_name(name, "LoRA name")
    query = select(Lora).where(Lora.project_id == proj.id, Lora.name == name)
    if lock:
        query = query.with_for_update()
    row = scope.session.exec(query).first()
    if row is None:
        names = list(scope.session.exec(select(Lora.name).where(Lora.project_id == proj.id)).all())
        raise NotFound(
            f"LoRA {project}/{name} does not exist{did_you_mean(name, names)}",
            hint="create it with `wanlora lora create` or register a file with --category and --base-model",
        )
    return proj, row


def versions_of(scope: Scope, lora: Lora) -> list[Version]:
    """Every version of the LoRA, lowest semver first (visibility is the caller's to filter)."""
    rows = list(scope.session.exec(select(Version).where(Version.lora_id == lora.id)).all())
    rows.sort(key=version_semver)
    return rows


def version_row(scope: Scope, lora: Lora, version: str, project: str) -> Version:
    wanted = str(parse_semver(version))
    row = scope.session.exec(select(Version).where(Version.lora_id == lora.id, Version.version == wanted)).first()
    if row is None or row.status not in scope.readable(project):
        raise NotFound(
            f"{project}/{lora.name} has no version {wanted}",
            hint=f"see its versions with `wanlora show {lora.name}`",
        )
    return row


def lora_and_version(
    scope: Scope, project: str, name: str, version: str, *, lock: bool = False
) -> tuple[Lora, Version]:
    """The LoRA (locked when asked) and one of its versions the caller may see."""
    _, lora = lora_row(scope, project, name, lock=lock)
    return lora, version_row(scope, lora, version, project)


def current_rows(
    scope: Scope, *, project: str | None, action: Action, lora: str | None = None
) -> list[tuple[Version, Lora, Project]]:
    """Every current version with its LoRA and project (optionally of one project, or one LoRA of it),
    in one query, in the projects where the caller may ``action``."""
    query = (
        select(Version, Lora, Project)
        .join(Lora, col(Lora.id) == Version.lora_id)
        .join(Project, col(Project.id) == Lora.project_id)
        .where(Version.status == Status.CURRENT.value)
    )
    if project:
        scope.require(project, action)
        query = query.where(Project.name == project)
        if lora is not None:
            query = query.where(Lora.name == lora)
    return [(v, lo, p) for v, lo, p in scope.session.exec(query).all() if scope.can(p.name, action)]


def current_version(scope: Scope, lora: Lora) -> Version | None:
    return scope.session.exec(
        select(Version).where(Version.lora_id == lora.id, Version.status == Status.CURRENT.value)
    ).first()


def files_of(scope: Scope, version_ids: Sequence[int]) -> dict[int, list[VersionFile]]:
    """Each version's files in role order (single, high-noise, low-noise), in one query."""
    out: dict[int, list[VersionFile]] = {vid: [] for vid in version_ids}
    if version_ids:
        rows = scope.session.exec(select(VersionFile).where(col(VersionFile.version_id).in_(version_ids)))
        for f in rows:
            out[f.version_id].append(f)
    order = {FileRole.SINGLE.value: 0, FileRole.HIGH_NOISE.value: 1, FileRole.LOW_NOISE.value: 2}
    for files in out.values():
        files.sort(key=lambda f: order[f.role])
    return out


def events_of(scope: Scope, lora: Lora) -> list[Event]:
    return list(scope.session.exec(select(Event).where(Event.lora_id == lora.id).order_by(col(Event.seq))).all())


def retired_ids(scope: Scope, lora: Lora, events: list[Event] | None = None) -> set[int | None]:
    """Versions taken out of service on purpose (rolled back or deprecated) and not made current since:
    never rollback targets."""
    retired: set[int | None] = set()
    for e in events or events_of(scope, lora):
        if e.kind in ("rolled_back", "deprecated"):
            retired.add(e.version_id)
        elif e.to_status == Status.CURRENT.value:
            retired.discard(e.version_id)
    return retired


def record_event(
    scope: Scope,
    lora: Lora,
    kind: str,
    *,
    version: Version | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    evaluation_id: str | None = None,
) -> Event:
    """Append to the LoRA's log with the next gap-free sequence number (the caller holds the LoRA's
    lock), and queue its webhooks in the same transaction."""
    last = scope.session.exec(select(func.max(Event.seq)).where(Event.lora_id == lora.id)).one()
    event = Event(
        lora_id=lora.id,
        seq=(last or 0) + 1,
        version_id=version.id if version else None,
        kind=kind,
        actor=scope.actor,
        at=utcnow(),
        from_status=from_status,
        to_status=to_status,
        reason=reason,
        evaluation_id=evaluation_id,
        details=details or {},
    )
    scope.session.add(event)
    scope.session.flush()
    enqueue_webhooks(scope.session, event, lora, version)
    return event


def set_status(
    scope: Scope,
    lora: Lora,
    v: Version,
    status: Status,
    kind: str,
    reason: str | None,
    evaluation_id: str | None = None,
    **details: Any,
) -> None:
    before = v.status
    v.status = status.value
    scope.session.add(v)
    scope.session.flush()  # demotions reach the database before the promotion (one-current index)
    record_event(
        scope, lora, kind, version=v, from_status=before, to_status=status.value, reason=reason, details=details,
        evaluation_id=evaluation_id,
    )  # fmt: skip
