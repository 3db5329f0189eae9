"""Changing the registry: LoRAs, registrations, annotations, and the lifecycle testing → current →
deprecated with rollback.

Every state change locks the LoRA row first (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN
IMMEDIATE`` already serialises writers), so concurrent promotions and rollbacks of one LoRA queue up
instead of interleaving, and each appends its events with the next gap-free sequence number.
Promotion goes through the gate (``registry.services.gate``): the phases the project's policy
requires must have passed for the version's files, or an admin overrides with a reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlmodel import select

from registry.db.tables import Lora, Version, VersionFile
from registry.domain.access import Action
from registry.domain.clock import utcnow
from registry.domain.enums import FileRole, Status
from registry.domain.errors import AlreadyExists, Conflict, InvalidInput
from registry.domain.limits import MAX_REASON, check_json, check_text, check_trigger_words
from registry.domain.schemas import (
    Hyperparameters,
    LoraPublic,
    VersionPublic,
    check_bump,
    check_name,
    parse_category,
    parse_semver,
)
from registry.domain.wan import base_model as lookup_base_model
from registry.files.ingest import IngestedFile
from registry.services.gate import gate_status, refusal
from registry.services.lookups import (
    current_version,
    events_of,
    files_of,
    lora_row,
    project_row,
    record_event,
    retired_ids,
    set_status,
    version_row,
    version_semver,
    versions_of,
)
from registry.services.scope import Service
from registry.services.views import lora_public, visible_version

__all__ = ["LifecycleService"]


class LifecycleService(Service):
    def _result(self, *, project: str, name: str, version: str) -> VersionPublic:
        self.scope.require(project, Action.LORA_READ)
        return visible_version(self.scope, project=project, name=name, version=version)

    def create_lora(
        self, *, project: str, name: str, category: str, base_model: str, trigger_words: Iterable[str] = (),
        description: str = "",
    ) -> LoraPublic:  # fmt: skip
        check_name(name, "LoRA name")
        self.scope.require(project, Action.LORA_CREATE)
        cat = parse_category(category)
        lookup_base_model(base_model)
        proj = project_row(self.scope, project, create=True)
        exists = self.session.exec(select(Lora).where(Lora.project_id == proj.id, Lora.name == name)).first()
        if exists is not None:
            raise AlreadyExists(f"LoRA {project}/{name} already exists", hint="register a new version instead")
        words = check_trigger_words([w.strip() for w in trigger_words if w.strip()])
        check_text(description, "description")
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
        record_event(self.scope, lora, "lora_created", details={"category": cat.value, "base_model": base_model})
        return lora_public(self.scope, project, lora, [])

    def next_version(self, *, project: str, name: str, bump: str) -> str:
        check_bump(bump)
        self.scope.require(project, Action.VERSION_REGISTER)
        _, lora = lora_row(self.scope, project, name)
        versions = versions_of(self.scope, lora)
        if not versions:
            return "1.0.0" if bump == "major" else ("0.1.0" if bump == "minor" else "0.0.1")
        latest = version_semver(versions[-1])
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
        self.scope.require(project, Action.VERSION_REGISTER)
        new = parse_semver(version)
        params, checked_scores = _check_record(
            changelog, known_issues, hyperparameters, dataset_hash, dataset_summary, scores
        )
        _, lora = lora_row(self.scope, project, name, lock=True)
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
        versions = versions_of(self.scope, lora)
        if versions and new <= version_semver(versions[-1]):
            raise Conflict(
                f"version {new} is not above {project}/{name}'s latest version {versions[-1].version}",
                hint="versions only go up: pick a higher version or use --bump major|minor|patch",
            )
        wanted = {(r.value, f.payload_sha256) for r, f in files.items()}
        existing = files_of(self.scope, [v.id for v in versions if v.id is not None])
        for v in versions:
            if {(f.role, f.payload_sha256) for f in existing[v.id or 0]} == wanted:
                raise AlreadyExists(
                    f"these weights are already registered as {project}/{name}@{v.version}",
                    hint="nothing changed since that version; promote it instead of registering it again",
                )
        parent_row = version_row(self.scope, lora, parent, project) if parent else (versions[-1] if versions else None)
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
                    source_autov3=f.source_autov3,
                    target_modules=f.target_modules,
                    module_count=f.module_count,
                )
            )
        self.session.flush()
        record_event(
            self.scope,
            lora,
            "registered",
            version=row,
            to_status=Status.TESTING.value,
            reason=row.changelog,
            details={"files": {r.value: f.sha256 for r, f in files.items()}},
        )
        return self._result(project=project, name=name, version=row.version)

    def annotate(
        self, *, project: str, name: str, version: str, scores: Mapping[str, float] | None = None,
        known_issues: str | None = None,
    ) -> VersionPublic:  # fmt: skip
        self.scope.require(project, Action.VERSION_EVALUATE)
        _, lora = lora_row(self.scope, project, name, lock=True)
        row = version_row(self.scope, lora, version, project)
        changes: dict[str, Any] = {}
        if scores:
            merged = {**(row.scores or {}), **_check_scores(scores)}
            changes["scores"] = merged
            row.scores = merged
        if known_issues is not None:
            check_text(known_issues, "known issues")
            changes["known_issues"] = known_issues
            row.known_issues = known_issues
        if not changes:
            raise InvalidInput("nothing to record", hint="pass --score NAME=VALUE or --known-issues TEXT")
        self.session.add(row)
        self.session.flush()
        record_event(self.scope, lora, "annotated", version=row, details=changes)
        return self._result(project=project, name=name, version=row.version)

    def promote(
        self, *, project: str, name: str, version: str, reason: str | None = None, override: bool = False
    ) -> VersionPublic:
        """testing → current; the old current becomes deprecated in the same transaction. The phases the
        project's policy requires must have passed for this version's files; an admin may override with
        a reason, and the event says so."""
        self.scope.require(project, Action.VERSION_PROMOTE)
        check_text(reason, "reason", MAX_REASON)
        _, lora = lora_row(self.scope, project, name, lock=True)
        row = version_row(self.scope, lora, version, project)
        if row.status == Status.CURRENT.value:
            raise Conflict(f"{project}/{name}@{row.version} is already current")
        if row.status == Status.DEPRECATED.value:
            raise Conflict(
                f"{project}/{name}@{row.version} is deprecated and cannot be promoted",
                hint="a version superseded by the current one comes back with `wanlora rollback`; a deprecated "
                "one is retired for good: register a new version",
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
        old = current_version(self.scope, lora)
        if old is not None:
            set_status(
                self.scope, lora, old, Status.DEPRECATED, "superseded", f"superseded by {row.version}", by=row.version
            )
        set_status(
            self.scope, lora, row, Status.CURRENT, "promoted", reason, replaced=old.version if old else None,
            evaluation_id=",".join(f"{k[0]}{v}" for k, v in evidence.items())[:64] or None, **extra,
        )  # fmt: skip
        return self._result(project=project, name=name, version=row.version)

    def rollback(self, *, project: str, name: str, reason: str | None = None) -> VersionPublic:
        """Make the version that was current before the current one current again; the one rolled back
        returns to testing (promotable again through the gate).

        The history of who held ``current`` is read from the event log; versions that were rolled back
        or deprecated on purpose are skipped, so repeated rollbacks walk further back in time.
        """
        self.scope.require(project, Action.VERSION_ROLLBACK)
        check_text(reason, "reason", MAX_REASON)
        _, lora = lora_row(self.scope, project, name, lock=True)
        events = events_of(self.scope, lora)
        current = current_version(self.scope, lora)
        retired = retired_ids(self.scope, lora, events)
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
            # back to testing, not deprecated: it may go out again, through the gate, once it is fixed
            # or cleared; only `deprecate` retires a version for good
            set_status(self.scope, lora, current, Status.TESTING, "rolled_back", reason, to=target.version)
        set_status(
            self.scope,
            lora,
            target,
            Status.CURRENT,
            "restored",
            reason,
            rolled_back=current.version if current else None,
        )
        return self._result(project=project, name=name, version=target.version)

    def deprecate(self, *, project: str, name: str, version: str, reason: str | None = None) -> VersionPublic:
        self.scope.require(project, Action.VERSION_DEPRECATE)
        check_text(reason, "reason", MAX_REASON)
        _, lora = lora_row(self.scope, project, name, lock=True)
        row = version_row(self.scope, lora, version, project)
        # A superseded version is deprecated but still a rollback target; deprecating it on purpose
        # retires it for good. Only a version already retired is refused.
        if row.status == Status.DEPRECATED.value and row.id in retired_ids(self.scope, lora):
            raise Conflict(f"{project}/{name}@{row.version} is already deprecated")
        set_status(self.scope, lora, row, Status.DEPRECATED, "deprecated", reason)
        return self._result(project=project, name=name, version=row.version)


def _check_record(
    changelog: str,
    known_issues: str,
    hyperparameters: Mapping[str, Any] | None,
    dataset_hash: str | None,
    dataset_summary: Mapping[str, Any] | None,
    scores: Mapping[str, float] | None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """A new version's record, held to its bounds: the hyperparameters and scores as they are stored."""
    check_text(changelog, "changelog")
    check_text(known_issues, "known issues")
    check_json(dict(hyperparameters or {}), "hyperparameters")
    check_json(dict(dataset_summary or {}), "dataset summary")
    if dataset_hash is not None and not (0 < len(dataset_hash) <= 128 and dataset_hash.isprintable()):
        raise InvalidInput(f"invalid dataset hash {dataset_hash[:40]!r}", hint="at most 128 printable characters")
    return _check_hyperparameters(hyperparameters or {}), _check_scores(scores or {})


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
