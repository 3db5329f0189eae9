"""Rows into the public shapes of ``registry.domain.schemas``: what leaves the services."""

from __future__ import annotations

from collections.abc import Mapping

from sqlmodel import col, select

from registry.db.tables import Event, Lora, Version, VersionFile
from registry.domain.clock import as_utc
from registry.domain.enums import Category, Status
from registry.domain.errors import NotFound
from registry.domain.schemas import FilePublic, LoraPublic, VersionPublic
from registry.services.lookups import files_of, lora_row, version_row, versions_of
from registry.services.scope import Scope

__all__ = ["file_public", "lora_public", "version_public", "visible_version"]


def file_public(f: VersionFile) -> FilePublic:
    return FilePublic.model_validate(f, from_attributes=True)


def _version(
    project: str,
    lora: Lora,
    v: Version,
    files: list[VersionFile],
    parents: Mapping[int, str],
    overrides: Mapping[int, str | None] | None = None,
) -> VersionPublic:
    return VersionPublic(
        project=project,
        lora=lora.name,
        version=v.version,
        status=Status(v.status),
        changelog=v.changelog,
        dataset_hash=v.dataset_hash,
        dataset_summary=v.dataset_summary or {},
        hyperparameters=v.hyperparameters or {},
        scores=v.scores or {},
        known_issues=v.known_issues,
        training_date=as_utc(v.training_date),
        parent_version=parents.get(v.parent_id) if v.parent_id else None,
        created_by=v.created_by,
        created_at=as_utc(v.created_at) or v.created_at,
        files=[file_public(f) for f in files],
        promoted_on_override=(overrides or {}).get(v.id or 0),
    )


def version_public(scope: Scope, project: str, lora: Lora, versions: list[Version]) -> list[VersionPublic]:
    """Versions with their files and parents' names, in one query for the files."""
    files = files_of(scope, [v.id for v in versions if v.id is not None])
    names = {v.id: v.version for v in versions if v.id is not None}
    overrides = _overrides(scope, lora)
    return [_version(project, lora, v, files[v.id or 0], names, overrides) for v in versions]


def _overrides(scope: Scope, lora: Lora) -> dict[int, str | None]:
    """Per version, the reason of its last promotion when that was an override (else None)."""
    overrides: dict[int, str | None] = {}
    promotions = scope.session.exec(
        select(Event).where(Event.lora_id == lora.id, Event.kind == "promoted").order_by(col(Event.seq))
    )
    for e in promotions:  # the last promotion of each version decides
        if e.version_id is not None:
            overrides[e.version_id] = (e.reason or "no reason given") if (e.details or {}).get("override") else None
    return overrides


def lora_public(scope: Scope, project: str, lora: Lora, versions: list[Version]) -> LoraPublic:
    current = next((v.version for v in versions if v.status == Status.CURRENT.value), None)
    return LoraPublic(
        project=project,
        name=lora.name,
        category=Category(lora.category),
        base_model=lora.base_model,
        trigger_words=list(lora.trigger_words or []),
        description=lora.description,
        created_by=lora.created_by,
        created_at=as_utc(lora.created_at) or lora.created_at,
        current_version=current,
        latest_version=versions[-1].version if versions else None,
        versions=version_public(scope, project, lora, versions),
    )


def visible_version(scope: Scope, *, project: str, name: str, version: str | None = None) -> VersionPublic:
    """One version the caller may see; without ``version`` the current one, or the latest when none is
    current. The caller has checked the read permission."""
    _, lora = lora_row(scope, project, name)
    readable = scope.readable(project)
    versions = [v for v in versions_of(scope, lora) if v.status in readable]
    if not versions:
        raise NotFound(f"{project}/{name} has no versions yet", hint="register one with `wanlora register`")
    if version is None:
        row = next((v for v in versions if v.status == Status.CURRENT.value), versions[-1])
    else:
        row = version_row(scope, lora, version, project)
    files = files_of(scope, [row.id or 0])
    names = {v.id: v.version for v in versions if v.id is not None}
    return _version(project, lora, row, files[row.id or 0], names, _overrides(scope, lora))
