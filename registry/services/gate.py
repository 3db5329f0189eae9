"""The promotion gate: each phase's state for a version's files under the project's policy, and the
refusal that names what is missing and the command that provides it."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from registry.db.tables import Evaluation, Lora, Trial, Version, VersionFile
from registry.domain.digests import files_digest
from registry.domain.errors import GateRefused
from registry.domain.eval_schemas import GateStatus, PhaseState
from registry.domain.policy import PHASE_NUMBER, PHASES, ProjectPolicy

__all__ = ["gate_status", "refusal", "version_digest"]


def version_digest(session: Session, version_id: int | None) -> str:
    files = session.exec(select(VersionFile.role, VersionFile.sha256).where(VersionFile.version_id == version_id))
    return files_digest(files.all())


def _latest(session: Session, version_id: int, phase: str) -> Evaluation | None:
    return session.exec(
        select(Evaluation)
        .where(Evaluation.version_id == version_id, Evaluation.phase == phase)
        .order_by(col(Evaluation.id).desc())
    ).first()


def gate_status(session: Session, project: str, lora: Lora, version: Version, policy: ProjectPolicy) -> GateStatus:
    """Each phase's state for this version's files, under the project's policy."""
    digest = version_digest(session, version.id)
    phases = []
    for phase in PHASES:
        required = phase in policy.require
        row = _latest(session, version.id or 0, phase)
        state: Any = "missing"
        detail, evaluation_id = "", None
        if row is not None and row.digest != digest:
            detail = "the recorded evidence is for other files"
        elif row is not None:
            state = "passed" if row.passed else "failed"
            detail, evaluation_id = row.summary, row.id
        elif phase == "trial":
            running = session.exec(
                select(Trial).where(Trial.version_id == version.id, Trial.status == "running")
            ).first()
            t = policy.trial
            needs = (
                f"{t.min_reports} reports on the candidate over at least {t.min_hours:g} h, an error rate of at most "
                f"{t.max_error_rate:.0%} (and within {t.error_margin:.0%} of the current's), a rating within "
                f"{t.rating_margin:g} of the current's"
            )
            if running is not None:
                state, detail = (
                    "running",
                    f"trial {running.id} on {running.share:g}% of jobs is running; it needs {needs}",
                )
            else:
                detail = f"a trial on {t.share:g}% of jobs passes after {needs}"
        if not required and state != "passed":
            state = "not_required"
        phases.append(
            PhaseState(
                phase=phase,
                number=PHASE_NUMBER[phase],
                required=required,
                state=state,
                detail=detail,
                evaluation_id=evaluation_id,
            )
        )
    ready = all(p.state == "passed" for p in phases if p.required)
    return GateStatus(
        project=project, lora=lora.name, version=version.version, digest=digest, ready=ready, phases=phases
    )


def refusal(gate: GateStatus) -> GateRefused:
    """The error that names each missing or failed phase and why."""
    parts = []
    for p in gate.blocking():
        why = f": {p.detail}" if p.detail else ""
        parts.append(f"phase {p.number} ({p.phase}) {p.state}{why}")
    where = "" if gate.project == "default" else f" -p {gate.project}"
    hints = {
        "technical": f"wanlora eval technical {gate.lora}@{gate.version}{where}",
        "quality": f"wanlora eval quality {gate.lora}@{gate.version}{where}",
        "trial": f"wanlora trial start {gate.lora}@{gate.version}{where}",
    }
    todo = "; ".join(hints[p.phase] for p in gate.blocking() if p.state in ("missing", "failed"))
    return GateRefused(
        f"{gate.project}/{gate.lora}@{gate.version} cannot be promoted: " + "; ".join(parts),
        hint=(f"run {todo}; " if todo else "")
        + "or, as an admin, `wanlora promote … --override --reason '…'` (recorded as an override)",
    )
