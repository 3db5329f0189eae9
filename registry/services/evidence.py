"""Phases 1 and 2: evaluation results recorded for the files they were made on, and the gate's view."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from sqlmodel import col, select

from registry.db.tables import Evaluation, EvaluationAttachment, Lora, Version, VersionPreview
from registry.domain.access import Action
from registry.domain.clock import as_utc, utcnow
from registry.domain.errors import Conflict, InvalidInput, NotFound
from registry.domain.eval_schemas import (
    MAX_CONTACT_SHEET_BYTES,
    MAX_PREVIEW_BYTES,
    MAX_REPORT_CHARS,
    PNG_SIGNATURE,
    EvaluationIn,
    EvaluationPublic,
    GateStatus,
)
from registry.domain.limits import check_json, check_text
from registry.services.gate import gate_status, version_digest
from registry.services.lookups import lora_and_version, record_event
from registry.services.scope import Service

__all__ = ["EvidenceService"]


class EvidenceService(Service):
    def digest(self, *, project: str, name: str, version: str) -> str:
        self.scope.require(project, Action.LORA_READ)
        _, row = lora_and_version(self.scope, project, name, version)
        return version_digest(self.session, row.id)

    def record(self, *, project: str, name: str, version: str, result: EvaluationIn) -> EvaluationPublic:
        """Record a phase 1 or 2 result for the files it was made on; its scores join the version's."""
        self.scope.require(project, Action.VERSION_EVALUATE)
        lora, row = lora_and_version(self.scope, project, name, version, lock=True)
        gate = gate_status(self.session, project, lora, row, self.policy.for_project(project))
        if result.digest != gate.digest:
            raise Conflict(
                f"the evaluated files ({result.digest[:12]}) are not the files of {project}/{name}@{row.version} "
                f"({gate.digest[:12]})",
                hint="evaluate the version's own files: `wanlora eval … NAME@VERSION` fetches them",
            )
        check_json(result.details, "evaluation details", max_bytes=1024 * 1024)
        check_text(result.summary, "evaluation summary")
        preview = _preview(result)
        attachments = _attachments(result)
        scores = {k: float(v) for k, v in result.scores.items() if 0 <= v <= 10}
        evaluation = Evaluation(
            version_id=row.id or 0, phase=result.phase, digest=result.digest, passed=result.passed,
            summary=result.summary, scores=scores, details=result.details, created_by=self.principal.user,
            created_at=utcnow(),
        )  # fmt: skip
        self.session.add(evaluation)
        if scores:
            row.scores = {**(row.scores or {}), **scores}
            self.session.add(row)
        self.session.flush()
        if preview is not None:
            self.session.merge(
                VersionPreview(
                    version_id=row.id or 0, sha256=hashlib.sha256(preview).hexdigest(), png=preview,
                    evaluation_id=evaluation.id,
                )
            )  # fmt: skip
        for file_name, (media_type, data) in attachments.items():
            self.session.add(
                EvaluationAttachment(evaluation_id=evaluation.id or 0, name=file_name, media_type=media_type, data=data)
            )
        record_event(self.scope,
            lora, "evaluated", version=row, reason=result.summary or None,
            details={"phase": result.phase, "passed": result.passed, "evaluation": evaluation.id, "scores": scores},
            evaluation_id=str(evaluation.id),
        )  # fmt: skip
        return self._public(project, lora, row, evaluation)

    def _public(self, project: str, lora: Lora, v: Version, e: Evaluation) -> EvaluationPublic:
        return EvaluationPublic(
            id=e.id or 0, project=project, lora=lora.name, version=v.version, phase=e.phase,  # type: ignore[arg-type]
            digest=e.digest, passed=e.passed, summary=e.summary, scores=e.scores or {}, details=e.details or {},
            created_by=e.created_by, created_at=as_utc(e.created_at) or e.created_at,
        )  # fmt: skip

    def evaluations(self, *, project: str, name: str, version: str) -> list[EvaluationPublic]:
        self.scope.require(project, Action.LORA_READ)
        lora, row = lora_and_version(self.scope, project, name, version)
        rows = self.session.exec(
            select(Evaluation).where(Evaluation.version_id == row.id).order_by(col(Evaluation.id))
        ).all()
        return [self._public(project, lora, row, e) for e in rows]

    def attachment_names(self, *, project: str, name: str, version: str) -> dict[int, list[str]]:
        """Per evaluation of the version, the names of what it kept (contact.png, report.md)."""
        self.scope.require(project, Action.LORA_READ)
        _, row = lora_and_version(self.scope, project, name, version)
        query = (
            select(EvaluationAttachment.evaluation_id, EvaluationAttachment.name)
            .join(Evaluation, col(Evaluation.id) == EvaluationAttachment.evaluation_id)
            .where(Evaluation.version_id == row.id)
        )
        out: dict[int, list[str]] = {}
        for evaluation_id, file_name in self.session.exec(query).all():
            out.setdefault(evaluation_id, []).append(file_name)
        return out

    def attachment(self, *, project: str, name: str, version: str, evaluation_id: int, file: str) -> tuple[str, bytes]:
        """One kept file of one of the version's evaluations: its media type and bytes."""
        self.scope.require(project, Action.LORA_READ)
        _, row = lora_and_version(self.scope, project, name, version)
        found = self.session.exec(
            select(EvaluationAttachment)
            .join(Evaluation, col(Evaluation.id) == EvaluationAttachment.evaluation_id)
            .where(Evaluation.version_id == row.id, EvaluationAttachment.evaluation_id == evaluation_id,
                   EvaluationAttachment.name == file)
        ).first()  # fmt: skip
        if found is None:
            raise NotFound(f"evaluation {evaluation_id} of {project}/{name}@{row.version} kept no {file!r}")
        return found.media_type, found.data

    def gate(self, *, project: str, name: str, version: str) -> GateStatus:
        self.scope.require(project, Action.LORA_READ)
        lora, row = lora_and_version(self.scope, project, name, version)
        return gate_status(self.session, project, lora, row, self.policy.for_project(project))

    def policy_for(self, *, project: str) -> dict[str, Any]:
        """The effective policy of a project (the default with the project's overrides)."""
        self.scope.require(project, Action.LORA_READ)
        return self.policy.for_project(project).model_dump(mode="json")


def _attachments(result: EvaluationIn) -> dict[str, tuple[str, bytes]]:
    """Phase 2's contact sheet (a PNG, checked like the preview) and report.md (text)."""
    out: dict[str, tuple[str, bytes]] = {}
    if (result.contact_sheet_png or result.report_md) and result.phase != "quality":
        raise InvalidInput("only a phase 2 (quality) result carries a contact sheet or a report")
    if result.contact_sheet_png:
        out["contact.png"] = ("image/png", _png(result.contact_sheet_png, "the contact sheet", MAX_CONTACT_SHEET_BYTES))
    if result.report_md:
        check_text(result.report_md, "evaluation report", MAX_REPORT_CHARS)
        out["report.md"] = ("text/markdown; charset=utf-8", result.report_md.encode())
    return out


def _preview(result: EvaluationIn) -> bytes | None:
    """The phase 2 preview, checked: base64 of a PNG of at most MAX_PREVIEW_BYTES."""
    if result.preview_png is None:
        return None
    if result.phase != "quality":
        raise InvalidInput("only a phase 2 (quality) result carries a preview")
    return _png(result.preview_png, "the preview", MAX_PREVIEW_BYTES)


def _png(text: str, what: str, limit: int) -> bytes:
    """A base64 PNG of at most ``limit`` bytes, decoded; InvalidInput naming ``what`` otherwise."""
    try:
        png = base64.b64decode(text, validate=True)
    except ValueError:
        raise InvalidInput(f"{what} is not base64", hint="send the PNG's bytes base64-encoded") from None
    if len(png) > limit or not png.startswith(PNG_SIGNATURE):
        raise InvalidInput(f"{what} must be a PNG of at most {limit // 1024} KB")
    return png
