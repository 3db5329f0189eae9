"""Reading the registry: LoRAs, versions, history, diffs, training notes, and what hosts should pull.

Every method checks the caller's permission first (deny by default); a version whose status the
caller may not read does not exist for it, and other teams' LoRAs are not listed at all.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, func, or_, text, tuple_
from sqlmodel import col, select

from registry.db.tables import Event, Lora, Project, Trial, Version, VersionFile, VersionPreview
from registry.domain.access import Action
from registry.domain.clock import as_utc
from registry.domain.digests import canary, targets_tag
from registry.domain.enums import Category, FileRole, Status
from registry.domain.errors import InvalidInput, NotFound
from registry.domain.limits import MAX_PAGE
from registry.domain.notes import training_notes
from registry.domain.schemas import (
    Change,
    EventPublic,
    FileMatch,
    LoraPublic,
    LoraSummary,
    SyncTarget,
    VersionDiff,
    VersionPublic,
    parse_semver,
)
from registry.services.lookups import current_rows, files_of, lora_row, project_row, version_semver, versions_of
from registry.services.scope import Service
from registry.services.views import file_public, lora_public, visible_version

__all__ = ["CatalogueService"]

_HEX64 = re.compile(r"[0-9a-f]{64}")


class CatalogueService(Service):
    def get_lora(self, *, project: str, name: str) -> LoraPublic:
        self.scope.require(project, Action.LORA_READ)
        _, lora = lora_row(self.scope, project, name)
        readable = self.scope.readable(project)
        return lora_public(
            self.scope, project, lora, [v for v in versions_of(self.scope, lora) if v.status in readable]
        )

    def find_lora(self, *, project: str, name: str) -> LoraPublic | None:
        try:
            return self.get_lora(project=project, name=name)
        except NotFound:
            return None

    def list_loras(
        self,
        *,
        project: str | None = None,
        category: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[LoraSummary]:
        """The LoRAs by project and name. With ``limit``, one page of at most that many, after the LoRA
        named ``after`` (``project/name``, or ``name`` within ``project``): a keyset page, which costs
        the same on the thousandth page as on the first."""
        query = select(Lora, Project).join(Project, col(Project.id) == Lora.project_id)
        if project:
            self.scope.require(project, Action.LORA_READ)  # naming a project one may not read is refused
            project_row(self.scope, project)  # a typo is told so, not answered "no LoRAs yet"
            query = query.where(Project.name == project)
        if category:
            query = query.where(Lora.category == category)
        if limit is not None:
            if not 1 <= limit <= MAX_PAGE:
                raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
            query = query.where(col(Project.id).in_(self._listable_projects(project)))
            if status:  # in the query, so that pages stay full
                query = query.where(
                    select(Version.id).where(Version.lora_id == Lora.id, Version.status == status).exists()
                )
            if after:
                after_project, _, after_name = after.rpartition("/")
                after_project = after_project or project or ""
                query = query.where(tuple_(Project.name, Lora.name) > tuple_(after_project, after_name))
            query = query.limit(limit)
        rows = list(self.session.exec(query.order_by(Project.name, Lora.name)).all())
        by_lora: dict[int, list[Version]] = {lora.id or 0: [] for lora, _ in rows}
        if rows:
            versions = self.session.exec(select(Version).where(col(Version.lora_id).in_(list(by_lora))))
            for v in versions:
                by_lora[v.lora_id].append(v)
        out = []
        readable: dict[str, set[str]] = {}
        for lora, proj in rows:
            if proj.name not in readable:
                readable[proj.name] = self.scope.readable(proj.name)
            if not self.scope.can(proj.name, Action.LORA_READ):
                continue  # other teams' LoRAs are not listed at all
            versions = sorted((v for v in by_lora[lora.id or 0] if v.status in readable[proj.name]), key=version_semver)
            statuses = Counter(v.status for v in versions)
            if status and not statuses.get(status):
                continue
            out.append(
                LoraSummary(
                    project=proj.name,
                    name=lora.name,
                    category=Category(lora.category),
                    base_model=lora.base_model,
                    current_version=next((v.version for v in versions if v.status == Status.CURRENT.value), None),
                    latest_version=versions[-1].version if versions else None,
                    version_count=len(versions),
                    statuses=dict(statuses),
                    trigger_words=list(lora.trigger_words or []),
                )
            )
        return out

    def _listable_projects(self, project: str | None) -> list[int]:
        """The ids of the projects whose LoRAs this caller may list (all of them, or ``project``)."""
        query = select(Project.id, Project.name)
        if project:
            query = query.where(Project.name == project)
        return [pid for pid, name in self.session.exec(query).all() if self.scope.can(name, Action.LORA_READ)]

    def which(
        self, *, sha256: str | None = None, payload_sha256: str | None = None, autov3: str | None = None
    ) -> list[FileMatch]:
        """The versions a file is, by any of its digests, among those the caller may see."""
        wanted = {k: v for k, v in (("sha256", sha256), ("payload", payload_sha256), ("autov3", autov3)) if v}
        for what, digest in wanted.items():
            if not _HEX64.fullmatch(digest):
                raise InvalidInput(f"{what} must be 64 hex digits (a sha256), got {digest[:80]!r}")
        if not wanted:
            raise InvalidInput("give at least one digest", hint="sha256, payload_sha256 or autov3")
        conditions: list[ColumnElement[bool]] = []
        if sha256:
            conditions += [col(VersionFile.sha256) == sha256, col(VersionFile.source_sha256) == sha256]
        if payload_sha256:
            conditions.append(col(VersionFile.payload_sha256) == payload_sha256)
        if autov3:
            conditions.append(col(VersionFile.source_autov3) == autov3)
        query = (
            select(VersionFile, Version, Lora, Project)
            .join(Version, col(Version.id) == VersionFile.version_id)
            .join(Lora, col(Lora.id) == Version.lora_id)
            .join(Project, col(Project.id) == Lora.project_id)
            .where(or_(*conditions))
            .order_by(Project.name, Lora.name, col(Version.id))
            .limit(1000)
        )
        out = []
        readable: dict[str, set[str]] = {}
        for f, v, lora, proj in self.session.exec(query).all():
            if proj.name not in readable:
                can = self.scope.can(proj.name, Action.LORA_READ)
                readable[proj.name] = self.scope.readable(proj.name) if can else set()
            if v.status not in readable[proj.name]:
                continue  # another team's, or a status this role never sees
            by = [
                name
                for name, hit in (
                    ("sha256", sha256 == f.sha256),
                    ("source", sha256 == f.source_sha256),
                    ("payload", payload_sha256 == f.payload_sha256),
                    ("autov3", autov3 is not None and autov3 == f.source_autov3),
                )
                if hit
            ]
            out.append(FileMatch(project=proj.name, lora=lora.name, version=v.version, status=Status(v.status),
                                 role=FileRole(f.role), sha256=f.sha256, by=by))  # fmt: skip
        return out

    def get_version(self, *, project: str, name: str, version: str | None = None) -> VersionPublic:
        """One version; without ``version`` the current one, or the latest when none is current."""
        self.scope.require(project, Action.LORA_READ)
        return visible_version(self.scope, project=project, name=name, version=version)

    def history(
        self, *, project: str, name: str | None = None, limit: int | None = None, before: int | None = None
    ) -> list[EventPublic]:
        """Events newest first; ``before`` (an event id) pages back through older ones."""
        self.scope.require(project, Action.HISTORY_READ)
        query = (
            select(Event, Lora, Project)
            .join(Lora, col(Lora.id) == Event.lora_id)
            .join(Project, col(Project.id) == Lora.project_id)
            .where(Project.name == project)
        )
        if name is not None:
            _, lora = lora_row(self.scope, project, name)
            query = query.where(Event.lora_id == lora.id)
        if before is not None:
            query = query.where(col(Event.id) < before)
        query = query.order_by(col(Event.id).desc())
        if limit:
            query = query.limit(limit)
        rows = list(self.session.exec(query).all())
        version_ids = [e.version_id for e, _, _ in rows if e.version_id]
        names = {}
        if version_ids:
            names = {
                v.id: v.version for v in self.session.exec(select(Version).where(col(Version.id).in_(version_ids)))
            }
        return [
            EventPublic(
                id=e.id or 0,
                seq=e.seq,
                project=p.name,
                lora=lo.name,
                version=names.get(e.version_id) if e.version_id else None,
                kind=e.kind,
                actor=e.actor,
                at=as_utc(e.at) or e.at,
                from_status=e.from_status,
                to_status=e.to_status,
                reason=e.reason,
                details=e.details or {},
                evaluation_id=e.evaluation_id,
            )
            for e, lo, p in rows
        ]

    def diff(self, *, project: str, name: str, old: str, new: str) -> VersionDiff:
        a = self.get_version(project=project, name=name, version=old)
        b = self.get_version(project=project, name=name, version=new)

        def changes(x: Mapping[str, Any], y: Mapping[str, Any]) -> dict[str, Change]:
            return {k: Change(old=x.get(k), new=y.get(k)) for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)}

        def files(v: VersionPublic) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for f in v.files:
                for key in ("rank", "alpha", "size", "dtype", "payload_sha256", "target_modules"):
                    out[f"{f.role.value}.{key}"] = getattr(f, key)
            return out

        return VersionDiff(
            project=project,
            lora=name,
            old=a.version,
            new=b.version,
            hyperparameters=changes(a.hyperparameters, b.hyperparameters),
            dataset=changes(
                {"hash": a.dataset_hash, **a.dataset_summary}, {"hash": b.dataset_hash, **b.dataset_summary}
            ),
            scores=changes(a.scores, b.scores),
            files=changes(files(a), files(b)),
            changelog=Change(old=a.changelog, new=b.changelog),
            status=Change(old=a.status.value, new=b.status.value),
        )

    def notes(self, *, project: str, name: str) -> str:
        """training_notes.md for the LoRA: the guide's version log of the versions the caller may see."""
        return training_notes(self.get_lora(project=project, name=name))

    # -- what hosts pull ----------------------------------------------------------------------------

    def require_artifact(self, sha256: str, *, client: str | None = None) -> None:
        """Allow a download only of a file of a version the caller may see and pull, or of a running
        trial's candidate to a ``client`` (the host or job id it resolved with) in the trial's share;
        NotFound otherwise, so that the answer says nothing about other projects or hidden versions."""
        rows = self.session.exec(
            select(Version.status, Project.name)
            .join(VersionFile, col(VersionFile.version_id) == Version.id)
            .join(Lora, col(Lora.id) == Version.lora_id)
            .join(Project, col(Project.id) == Lora.project_id)
            .where(VersionFile.sha256 == sha256)
        ).all()
        for status, project in rows:
            if self.scope.can(project, Action.ARTIFACT_PULL) and status in self.scope.readable(project):
                return
        on_trial = self.session.exec(
            select(Project.name, Trial.id, Trial.share)
            .join(Lora, col(Lora.project_id) == Project.id)
            .join(Trial, col(Trial.lora_id) == Lora.id)
            .join(VersionFile, col(VersionFile.version_id) == Trial.version_id)
            .where(VersionFile.sha256 == sha256, Trial.status == "running")
        ).all()
        for project, trial_id, share in on_trial:
            if client and self.scope.can(project, Action.ARTIFACT_PULL) and canary(trial_id or 0, client, share):
                return  # a trial's candidate is served to its share of hosts and jobs
        raise NotFound(f"no file {sha256[:12]} that this caller may download")

    def current_rows(
        self, *, project: str | None, action: Action, lora: str | None = None
    ) -> list[tuple[Version, Lora, Project]]:
        """Every current version with its LoRA and project, where the caller may ``action``."""
        return current_rows(self.scope, project=project, action=action, lora=lora)

    def current_targets(
        self, *, project: str | None = None, client: str | None = None, lora: str | None = None
    ) -> list[SyncTarget]:
        """Every current version (optionally of one project, or one LoRA of it) with its files, in one
        round of queries. With ``client`` (a ComfyUI host's id), a LoRA under trial gives its candidate
        instead when the client falls in the trial's share (also a LoRA with no current version yet):
        sticky, so the host keeps the same answer."""
        rows = [
            (v, lo, p)
            for v, lo, p in self.current_rows(
                project=project, action=Action.ARTIFACT_PULL, lora=lora if project else None
            )
            if self.scope.can(p.name, Action.VERSION_READ_CURRENT)
        ]
        on_trial: set[int] = set()
        if client:
            rows, on_trial = self._trial_swap(rows, client, project)
            if lora is not None:
                rows = [row for row in rows if row[1].name == lora]
        files = files_of(self.scope, [v.id or 0 for v, _, _ in rows])
        previews = dict(
            self.session.exec(
                select(VersionPreview.version_id, VersionPreview.sha256).where(
                    col(VersionPreview.version_id).in_([v.id for v, _, _ in rows])
                )
            ).all()
        )
        return [
            SyncTarget(
                project=p.name,
                lora=lo.name,
                category=Category(lo.category),
                version=v.version,
                files=[file_public(f) for f in files[v.id or 0]],
                status=Status(v.status),
                trial=(v.id or 0) in on_trial,
                base_model=lo.base_model,
                trigger_words=list(lo.trigger_words or []),
                description=lo.description,
                changelog=v.changelog,
                scores=dict(v.scores or {}),
                created_at=as_utc(v.created_at),
                preview_sha256=previews.get(v.id or 0),
            )
            for v, lo, p in rows
        ]

    def preview(self, *, project: str, name: str, version: str, client: str | None = None) -> bytes | None:
        """The version's phase 2 preview (PNG), for whoever may download its files; None when it has none."""
        self.scope.require(project, Action.ARTIFACT_PULL)
        _, lora = lora_row(self.scope, project, name)
        row = self.session.exec(
            select(Version).where(Version.lora_id == lora.id, Version.version == str(parse_semver(version)))
        ).first()
        first = files_of(self.scope, [row.id or 0])[row.id or 0] if row is not None else []
        if row is None or not first:
            raise NotFound(f"{project}/{name} has no version {version}")
        self.require_artifact(first[0].sha256, client=client)  # the same right as pulling the version's files
        found = self.session.get(VersionPreview, row.id)
        return found.png if found is not None else None

    def _trial_swap(
        self, rows: list[tuple[Version, Lora, Project]], client: str, project: str | None
    ) -> tuple[list[tuple[Version, Lora, Project]], set[int]]:
        """The rows with each running trial's candidate in place of the current version where the
        client falls in its share, and the ids of the candidates served."""
        query = (
            select(Trial, Lora, Project)
            .join(Lora, col(Lora.id) == Trial.lora_id)
            .join(Project, col(Project.id) == Lora.project_id)
            .where(Trial.status == "running")
        )
        if project:
            query = query.where(Project.name == project)
        trials = {
            lo.id: (t, lo, p)
            for t, lo, p in self.session.exec(query).all()
            if self.scope.can(p.name, Action.ARTIFACT_PULL) and self.scope.can(p.name, Action.VERSION_READ_CURRENT)
        }
        served: set[int] = set()

        def candidate(trial: Trial) -> Version | None:
            if not canary(trial.id or 0, client, trial.share):
                return None
            version = self.session.get(Version, trial.version_id)
            if version is not None:
                served.add(version.id or 0)
            return version

        out = []
        for v, lo, p in rows:
            entry = trials.pop(lo.id, None)
            out.append(((entry and candidate(entry[0])) or v, lo, p))
        for trial, lo, p in trials.values():  # LoRAs with no current version yet
            if (version := candidate(trial)) is not None:
                out.append((version, lo, p))
        return out, served

    def last_event_id(self) -> int:
        return self.session.exec(select(func.max(Event.id))).one() or 0

    def tagged_targets(self, *, project: str | None = None, client: str | None = None) -> tuple[str, list[SyncTarget]]:
        """``current_targets`` with the registry's tag for them (``digests.targets_tag``), read first:
        under READ COMMITTED a change landing in between makes the tag older than the answer, never
        newer, so a sync that recorded it looks again next time."""
        revision = self.session.execute(text("SELECT version_num FROM alembic_version")).scalar()
        tag = targets_tag(revision, self.last_event_id())
        return tag, self.current_targets(project=project, client=client)
