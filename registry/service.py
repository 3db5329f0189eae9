"""The registry service: every business rule of wanlora, once.

Methods are keyword-only, take plain values, return ``registry.schemas`` models, and never commit: the
caller owns the transaction (``Database.session``). Every state change locks the LoRA row first
(``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises writers), so
concurrent promotions and rollbacks of one LoRA queue up instead of interleaving, and each appends its
events with the next gap-free sequence number.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import semver
from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import Session, col, select

from registry.auth import READ_STATUS, Action, Authorizer, Principal, default_authorizer
from registry.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from registry.ingest import IngestedFile
from registry.models import (
    Category,
    Event,
    FileRole,
    Lora,
    Project,
    Status,
    Trial,
    Version,
    VersionFile,
    as_utc,
    utcnow,
)
from registry.policy import Policy
from registry.schemas import (
    Change,
    EventPublic,
    FilePublic,
    Hyperparameters,
    LoraPublic,
    LoraSummary,
    SyncTarget,
    VersionDiff,
    VersionPublic,
    check_name,
    parse_category,
    parse_semver,
)
from registry.wan import base_model as lookup_base_model
from registry.webhooks import enqueue as enqueue_webhooks

__all__ = ["RegistryService"]

BUMPS = ("major", "minor", "patch")


def _semver(v: Version) -> semver.Version:
    return semver.Version(v.major, v.minor, v.patch, v.prerelease)


class RegistryService:
    """Every method checks the caller's permission first (deny by default); a version whose status the
    caller may not read does not exist for it."""

    def __init__(
        self,
        session: Session,
        *,
        principal: Principal,
        authorizer: Authorizer | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.session = session
        self.policy = policy or Policy()
        self.principal = principal
        self.actor = principal.user
        self.authz = authorizer or default_authorizer()
        # The principal and the policy are fixed for this unit of work, so each (project, action) answer
        # is asked of casbin once: listing or syncing 1,000 LoRAs does not mean thousands of enforcements.
        self._allowed: dict[tuple[str, Action], bool] = {}

    def _require(self, project: str, action: Action) -> None:
        check_name(project, "project name")  # a malformed name is a 400, before any permission talk
        if not self._can(project, action):
            self.authz.require(self.principal, project, action)  # raises, with the message naming the role

    def _can(self, project: str, action: Action) -> bool:
        key = (project, action)
        if key not in self._allowed:
            self._allowed[key] = self.authz.allowed(self.principal, project, action)
        return self._allowed[key]

    def can(self, project: str, action: Action) -> bool:
        return self._can(project, action)

    def require_artifact(self, sha256: str) -> None:
        """Allow a download only of a file of a version the caller may see and pull; NotFound otherwise,
        so that the answer says nothing about files of other projects or hidden versions."""
        rows = self.session.exec(
            select(Version.status, Project.name)
            .join(VersionFile, col(VersionFile.version_id) == Version.id)
            .join(Lora, col(Lora.id) == Version.lora_id)
            .join(Project, col(Project.id) == Lora.project_id)
            .where(VersionFile.sha256 == sha256)
        ).all()
        for status, project in rows:
            if self._can(project, Action.ARTIFACT_PULL) and status in self._readable(project):
                return
        on_trial = self.session.exec(
            select(Project.name)
            .join(Lora, col(Lora.project_id) == Project.id)
            .join(Trial, col(Trial.lora_id) == Lora.id)
            .join(VersionFile, col(VersionFile.version_id) == Trial.version_id)
            .where(VersionFile.sha256 == sha256, Trial.status == "running")
        ).all()
        if any(self._can(project, Action.ARTIFACT_PULL) for project in on_trial):
            return  # a trial's candidate is served to its share of jobs
        raise NotFound(f"no file {sha256[:12]} that this caller may download")

    def _readable(self, project: str) -> set[str]:
        """The statuses whose versions the caller may see in a project."""
        if not self._can(project, Action.LORA_READ):
            return set()
        return {status for status, action in READ_STATUS.items() if self._can(project, action)}

    # -- lookups ------------------------------------------------------------------------------------

    def _project(self, name: str, *, create: bool = False) -> Project:
        check_name(name, "project name")
        row = self.session.exec(select(Project).where(Project.name == name)).first()
        if row is None:
            if not create:
                raise NotFound(f"project {name!r} does not exist", hint="list projects with `wanlora list`")
            row = Project(name=name, created_at=utcnow())
            self.session.add(row)
            self.session.flush()
        return row

    def _lora(self, project: str, name: str, *, lock: bool = False) -> tuple[Project, Lora]:
        proj = self._project(project)
        check_name(name, "LoRA name")
        query = select(Lora).where(Lora.project_id == proj.id, Lora.name == name)
        if lock:
            query = query.with_for_update()
        row = self.session.exec(query).first()
        if row is None:
            raise NotFound(
                f"LoRA {project}/{name} does not exist",
                hint="create it with `wanlora lora create` or register a file with --category and --base-model",
            )
        return proj, row

    def _versions(self, lora: Lora) -> list[Version]:
        rows = list(self.session.exec(select(Version).where(Version.lora_id == lora.id)).all())
        rows.sort(key=_semver)
        return rows

    def _version(self, lora: Lora, version: str, project: str) -> Version:
        wanted = str(parse_semver(version))
        row = self.session.exec(select(Version).where(Version.lora_id == lora.id, Version.version == wanted)).first()
        if row is None or row.status not in self._readable(project):
            raise NotFound(
                f"{project}/{lora.name} has no version {wanted}",
                hint=f"see its versions with `wanlora show {lora.name}`",
            )
        return row

    def _current(self, lora: Lora) -> Version | None:
        return self.session.exec(
            select(Version).where(Version.lora_id == lora.id, Version.status == Status.CURRENT.value)
        ).first()

    def _files(self, version_ids: Sequence[int]) -> dict[int, list[VersionFile]]:
        out: dict[int, list[VersionFile]] = {vid: [] for vid in version_ids}
        if version_ids:
            rows = self.session.exec(select(VersionFile).where(col(VersionFile.version_id).in_(version_ids)))
            for f in rows:
                out[f.version_id].append(f)
        order = {FileRole.SINGLE.value: 0, FileRole.HIGH_NOISE.value: 1, FileRole.LOW_NOISE.value: 2}
        for files in out.values():
            files.sort(key=lambda f: order[f.role])
        return out

    # -- conversions --------------------------------------------------------------------------------

    @staticmethod
    def _file_public(f: VersionFile) -> FilePublic:
        return FilePublic.model_validate(f, from_attributes=True)

    def _version_public(
        self, project: str, lora: Lora, v: Version, files: list[VersionFile], parents: Mapping[int, str]
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
            files=[self._file_public(f) for f in files],
        )

    def _versions_public(self, project: str, lora: Lora, versions: list[Version]) -> list[VersionPublic]:
        files = self._files([v.id for v in versions if v.id is not None])
        names = {v.id: v.version for v in versions if v.id is not None}
        return [self._version_public(project, lora, v, files[v.id or 0], names) for v in versions]

    def _lora_public(self, project: str, lora: Lora, versions: list[Version]) -> LoraPublic:
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
            versions=self._versions_public(project, lora, versions),
        )

    # -- events -------------------------------------------------------------------------------------

    def _event(
        self,
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
        last = self.session.exec(select(func.max(Event.seq)).where(Event.lora_id == lora.id)).one()
        event = Event(
            lora_id=lora.id,
            seq=(last or 0) + 1,
            version_id=version.id if version else None,
            kind=kind,
            actor=self.actor,
            at=utcnow(),
            from_status=from_status,
            to_status=to_status,
            reason=reason,
            evaluation_id=evaluation_id,
            details=details or {},
        )
        self.session.add(event)
        self.session.flush()
        enqueue_webhooks(self.session, event, lora, version)
        return event

    def _set_status(
        self,
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
        self.session.add(v)
        self.session.flush()  # demotions reach the database before the promotion (one-current index)
        self._event(
            lora, kind, version=v, from_status=before, to_status=status.value, reason=reason, details=details,
            evaluation_id=evaluation_id,
        )  # fmt: skip

    # -- projects and LoRAs -------------------------------------------------------------------------

    def create_lora(
        self,
        *,
        project: str,
        name: str,
        category: str,
        base_model: str,
        trigger_words: Iterable[str] = (),
        description: str = "",
    ) -> LoraPublic:
        check_name(name, "LoRA name")
        self._require(project, Action.LORA_CREATE)
        cat = parse_category(category)
        lookup_base_model(base_model)
        proj = self._project(project, create=True)
        exists = self.session.exec(select(Lora).where(Lora.project_id == proj.id, Lora.name == name)).first()
        if exists is not None:
            raise AlreadyExists(f"LoRA {project}/{name} already exists", hint="register a new version instead")
        words = [w.strip() for w in trigger_words if w.strip()]
        lora = Lora(
            project_id=proj.id,
            name=name,
            category=cat.value,
            base_model=base_model,
            trigger_words=words,
            description=description,
            created_by=self.actor,
            created_at=utcnow(),
        )
        self.session.add(lora)
        self.session.flush()
        self._event(lora, "lora_created", details={"category": cat.value, "base_model": base_model})
        return self._lora_public(project, lora, [])

    def get_lora(self, *, project: str, name: str) -> LoraPublic:
        self._require(project, Action.LORA_READ)
        _, lora = self._lora(project, name)
        readable = self._readable(project)
        return self._lora_public(project, lora, [v for v in self._versions(lora) if v.status in readable])

    def find_lora(self, *, project: str, name: str) -> LoraPublic | None:
        try:
            return self.get_lora(project=project, name=name)
        except NotFound:
            return None

    def list_loras(
        self, *, project: str | None = None, category: str | None = None, status: str | None = None
    ) -> list[LoraSummary]:
        query = select(Lora, Project).join(Project, col(Project.id) == Lora.project_id)
        if project:
            self._require(project, Action.LORA_READ)  # naming a project one may not read is refused
            query = query.where(Project.name == project)
        if category:
            query = query.where(Lora.category == category)
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
                readable[proj.name] = self._readable(proj.name)
            if not self._can(proj.name, Action.LORA_READ):
                continue  # other teams' LoRAs are not listed at all
            versions = sorted((v for v in by_lora[lora.id or 0] if v.status in readable[proj.name]), key=_semver)
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
                )
            )
        return out

    # -- versions -----------------------------------------------------------------------------------

    def next_version(self, *, project: str, name: str, bump: str) -> str:
        if bump not in BUMPS:
            raise InvalidInput(f"unknown bump {bump!r}", hint="use major, minor or patch")
        self._require(project, Action.VERSION_REGISTER)
        _, lora = self._lora(project, name)
        versions = self._versions(lora)
        if not versions:
            return "1.0.0" if bump == "major" else ("0.1.0" if bump == "minor" else "0.0.1")
        latest = _semver(versions[-1])
        return str(getattr(latest, f"bump_{bump}")())

    def register_version(
        self,
        *,
        project: str,
        name: str,
        version: str,
        files: Mapping[FileRole, IngestedFile],
        changelog: str,
        hyperparameters: Mapping[str, Any] | None = None,
        dataset_hash: str | None = None,
        dataset_summary: Mapping[str, Any] | None = None,
        training_date: datetime | None = None,
        scores: Mapping[str, float] | None = None,
        known_issues: str = "",
        parent: str | None = None,
    ) -> VersionPublic:
        if not changelog or not changelog.strip():
            raise InvalidInput("a version needs a changelog", hint="say what changed with --changelog TEXT")
        self._require(project, Action.VERSION_REGISTER)
        new = parse_semver(version)
        params = _check_hyperparameters(hyperparameters or {})
        if dataset_hash is not None and not (0 < len(dataset_hash) <= 128 and dataset_hash.isprintable()):
            raise InvalidInput(f"invalid dataset hash {dataset_hash[:40]!r}", hint="at most 128 printable characters")
        checked_scores = _check_scores(scores or {})
        _, lora = self._lora(project, name, lock=True)
        base = lookup_base_model(lora.base_model)
        roles = set(files)
        expected = {FileRole.HIGH_NOISE, FileRole.LOW_NOISE} if base.experts else {FileRole.SINGLE}
        if roles != expected:
            if base.experts:
                raise InvalidInput(
                    f"{lora.base_model} has a high-noise and a low-noise expert, so a version is a pair of files",
                    hint="pass the high-noise file as FILE and the low-noise file with --low-noise FILE",
                )
            raise InvalidInput(f"{lora.base_model} takes one file per version", hint="drop --low-noise")
        versions = self._versions(lora)
        if versions and new <= _semver(versions[-1]):
            raise Conflict(
                f"version {new} is not above {project}/{name}'s latest version {versions[-1].version}",
                hint="versions only go up: pick a higher version or use --bump major|minor|patch",
            )
        wanted = {(r.value, f.payload_sha256) for r, f in files.items()}
        existing = self._files([v.id for v in versions if v.id is not None])
        for v in versions:
            if {(f.role, f.payload_sha256) for f in existing[v.id or 0]} == wanted:
                raise AlreadyExists(
                    f"these weights are already registered as {project}/{name}@{v.version}",
                    hint="nothing changed since that version; promote it instead of registering it again",
                )
        parent_row = self._version(lora, parent, project) if parent else (versions[-1] if versions else None)
        row = Version(
            lora_id=lora.id,
            version=str(new),
            major=new.major,
            minor=new.minor,
            patch=new.patch,
            prerelease=new.prerelease,
            status=Status.TESTING.value,
            changelog=changelog.strip(),
            dataset_hash=dataset_hash,
            dataset_summary=dict(dataset_summary or {}),
            hyperparameters=params,
            scores=checked_scores,
            known_issues=known_issues,
            training_date=training_date,
            parent_id=parent_row.id if parent_row else None,
            created_by=self.actor,
            created_at=utcnow(),
        )
        self.session.add(row)
        self.session.flush()
        for role, f in files.items():
            self.session.add(
                VersionFile(
                    version_id=row.id,
                    role=role.value,
                    sha256=f.sha256,
                    payload_sha256=f.payload_sha256,
                    size=f.size,
                    rank=f.rank,
                    alpha=f.alpha,
                    dtype=f.dtype,
                    key_format="canonical",
                    source_format=f.source_format,
                    source_sha256=f.source_sha256,
                    target_modules=f.target_modules,
                    module_count=f.module_count,
                )
            )
        self.session.flush()
        self._event(
            lora,
            "registered",
            version=row,
            to_status=Status.TESTING.value,
            reason=row.changelog,
            details={"files": {r.value: f.sha256 for r, f in files.items()}},
        )
        return self.get_version(project=project, name=name, version=row.version)

    def get_version(self, *, project: str, name: str, version: str | None = None) -> VersionPublic:
        """One version; without ``version`` the current one, or the latest when none is current."""
        self._require(project, Action.LORA_READ)
        _, lora = self._lora(project, name)
        readable = self._readable(project)
        versions = [v for v in self._versions(lora) if v.status in readable]
        if not versions:
            raise NotFound(f"{project}/{name} has no versions yet", hint="register one with `wanlora register`")
        if version is None:
            row = next((v for v in versions if v.status == Status.CURRENT.value), versions[-1])
        else:
            row = self._version(lora, version, project)
        files = self._files([row.id or 0])
        names = {v.id: v.version for v in versions if v.id is not None}
        return self._version_public(project, lora, row, files[row.id or 0], names)

    def annotate(
        self,
        *,
        project: str,
        name: str,
        version: str,
        scores: Mapping[str, float] | None = None,
        known_issues: str | None = None,
    ) -> VersionPublic:
        self._require(project, Action.VERSION_EVALUATE)
        _, lora = self._lora(project, name, lock=True)
        row = self._version(lora, version, project)
        changes: dict[str, Any] = {}
        if scores:
            merged = {**(row.scores or {}), **_check_scores(scores)}
            changes["scores"] = merged
            row.scores = merged
        if known_issues is not None:
            changes["known_issues"] = known_issues
            row.known_issues = known_issues
        if not changes:
            raise InvalidInput("nothing to record", hint="pass --score NAME=VALUE or --known-issues TEXT")
        self.session.add(row)
        self.session.flush()
        self._event(lora, "annotated", version=row, details=changes)
        return self.get_version(project=project, name=name, version=row.version)

    # -- lifecycle ----------------------------------------------------------------------------------

    def promote(
        self, *, project: str, name: str, version: str, reason: str | None = None, override: bool = False
    ) -> VersionPublic:
        """testing → current; the old current becomes deprecated in the same transaction. The phases the
        project's policy requires must have passed for this version's files; an admin may override with
        a reason, and the event says so."""
        from registry.evaluation import gate_status, refusal

        self._require(project, Action.VERSION_PROMOTE)
        _, lora = self._lora(project, name, lock=True)
        row = self._version(lora, version, project)
        if row.status == Status.CURRENT.value:
            raise Conflict(f"{project}/{name}@{row.version} is already current")
        if row.status == Status.DEPRECATED.value:
            raise Conflict(
                f"{project}/{name}@{row.version} is deprecated and cannot be promoted",
                hint="a version that was current before comes back with `wanlora rollback`; "
                "otherwise register a new version",
            )
        gate = gate_status(self.session, project, lora, row, self.policy.for_project(project))
        evidence = {p.phase: p.evaluation_id for p in gate.phases if p.evaluation_id is not None}
        extra: dict[str, Any] = {"evidence": evidence, "digest": gate.digest}
        if not gate.ready:
            if not override:
                raise refusal(gate)
            if not (reason or "").strip():
                raise InvalidInput(
                    "an override needs a reason", hint="--override --reason 'why this goes out without evidence'"
                )
            extra["override"] = {p.phase: f"{p.state}: {p.detail}".rstrip(": ") for p in gate.blocking()}
        old = self._current(lora)
        if old is not None:
            self._set_status(lora, old, Status.DEPRECATED, "superseded", f"superseded by {row.version}", by=row.version)
        self._set_status(
            lora, row, Status.CURRENT, "promoted", reason, replaced=old.version if old else None,
            evaluation_id=",".join(f"{k[0]}{v}" for k, v in evidence.items())[:64] or None, **extra,
        )  # fmt: skip
        return self.get_version(project=project, name=name, version=row.version)

    def _events(self, lora: Lora) -> list[Event]:
        return list(self.session.exec(select(Event).where(Event.lora_id == lora.id).order_by(col(Event.seq))).all())

    def _retired(self, lora: Lora, events: list[Event] | None = None) -> set[int | None]:
        """Versions taken out of service on purpose (rolled back or deprecated): never rollback targets."""
        return {e.version_id for e in (events or self._events(lora)) if e.kind in ("rolled_back", "deprecated")}

    def rollback(self, *, project: str, name: str, reason: str | None = None) -> VersionPublic:
        """Make the version that was current before the current one current again.

        The history of who held ``current`` is read from the event log; versions that were rolled back
        or deprecated on purpose are skipped, so repeated rollbacks walk further back in time.
        """
        self._require(project, Action.VERSION_ROLLBACK)
        _, lora = self._lora(project, name, lock=True)
        events = self._events(lora)
        current = self._current(lora)
        retired = self._retired(lora, events)
        held = [e.version_id for e in events if e.to_status == Status.CURRENT.value]
        skip = retired | ({current.id} if current else set())
        target_id = next((vid for vid in reversed(held) if vid not in skip), None)
        if target_id is None:
            what = (
                f"{current.version} is the first version ever made current"
                if current
                else "no version was current before"
            )
            raise Conflict(
                f"nothing to roll back to for {project}/{name}: {what}",
                hint="deprecate the version with `wanlora deprecate` or promote another one",
            )
        target = self.session.get(Version, target_id)
        assert target is not None
        if current is not None:
            self._set_status(lora, current, Status.DEPRECATED, "rolled_back", reason, to=target.version)
        self._set_status(
            lora, target, Status.CURRENT, "restored", reason, rolled_back=current.version if current else None
        )
        return self.get_version(project=project, name=name, version=target.version)

    def deprecate(self, *, project: str, name: str, version: str, reason: str | None = None) -> VersionPublic:
        self._require(project, Action.VERSION_DEPRECATE)
        _, lora = self._lora(project, name, lock=True)
        row = self._version(lora, version, project)
        # A superseded version is deprecated but still a rollback target; deprecating it on purpose
        # retires it for good. Only a version already retired is refused.
        if row.status == Status.DEPRECATED.value and row.id in self._retired(lora):
            raise Conflict(f"{project}/{name}@{row.version} is already deprecated")
        self._set_status(lora, row, Status.DEPRECATED, "deprecated", reason)
        return self.get_version(project=project, name=name, version=row.version)

    # -- reading ------------------------------------------------------------------------------------

    def history(self, *, project: str, name: str | None = None, limit: int | None = None) -> list[EventPublic]:
        self._require(project, Action.HISTORY_READ)
        query = (
            select(Event, Lora, Project)
            .join(Lora, col(Lora.id) == Event.lora_id)
            .join(Project, col(Project.id) == Lora.project_id)
            .where(Project.name == project)
        )
        if name is not None:
            _, lora = self._lora(project, name)
            query = query.where(Event.lora_id == lora.id)
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

    def current_rows(self, *, project: str | None, action: Action) -> list[tuple[Version, Lora, Project]]:
        """Every current version with its LoRA and project (optionally of one project), in one query,
        in the projects where the caller may ``action``."""
        query = (
            select(Version, Lora, Project)
            .join(Lora, col(Lora.id) == Version.lora_id)
            .join(Project, col(Project.id) == Lora.project_id)
            .where(Version.status == Status.CURRENT.value)
        )
        if project:
            self._require(project, action)
            query = query.where(Project.name == project)
        return [(v, lo, p) for v, lo, p in self.session.exec(query).all() if self._can(p.name, action)]

    def current_targets(self, *, project: str | None = None, client: str | None = None) -> list[SyncTarget]:
        """Every current version (optionally of one project) with its files, in one round of queries.
        With ``client`` (a ComfyUI host's id), a LoRA under trial gives its candidate instead when the
        client falls in the trial's share: sticky, so the host keeps the same answer."""
        rows = [
            (v, lo, p)
            for v, lo, p in self.current_rows(project=project, action=Action.ARTIFACT_PULL)
            if self._can(p.name, Action.VERSION_READ_CURRENT)
        ]
        if client:
            rows = self._trial_swap(rows, client)
        files = self._files([v.id or 0 for v, _, _ in rows])
        return [
            SyncTarget(
                project=p.name,
                lora=lo.name,
                category=Category(lo.category),
                version=v.version,
                files=[self._file_public(f) for f in files[v.id or 0]],
            )
            for v, lo, p in rows
        ]

    def _trial_swap(
        self, rows: list[tuple[Version, Lora, Project]], client: str
    ) -> list[tuple[Version, Lora, Project]]:
        from registry.evaluation import canary

        trials = {t.lora_id: t for t in self.session.exec(select(Trial).where(Trial.status == "running")).all()}
        out = []
        for v, lo, p in rows:
            trial = trials.get(lo.id or 0)
            if trial is not None and canary(trial.id or 0, client, trial.share):
                v = self.session.get(Version, trial.version_id) or v
            out.append((v, lo, p))
        return out

    def last_event_id(self) -> int:
        return self.session.exec(select(func.max(Event.id))).one() or 0


def _check_hyperparameters(values: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return Hyperparameters.model_validate(dict(values)).as_dict()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(
            f"invalid hyperparameters: {problems}", hint="fix the values in the --hyperparams file"
        ) from None


def _check_scores(scores: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in scores.items():
        if not isinstance(key, str) or not key or len(key) > 64:
            raise InvalidInput(f"invalid score name {key!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"score {key!r} must be a number, got {value!r}") from None
        if not 0 <= number <= 10:
            raise InvalidInput(f"score {key!r} is {number}; scores are on a 0-10 scale")
        out[key] = number
    return out
