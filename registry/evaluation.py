"""Evaluation evidence, the promotion gate, production trials, host reports and the monthly review.

Evidence is bound to the version's files: ``files_digest`` hashes the (role, sha256) pairs, every
evaluation row carries the digest it was made for, and the gate only counts rows whose digest is the
version's. Phases 1 and 2 are recorded by the evaluator (``record``); phase 3 is a ``Trial``: the
candidate is served to a sticky share of jobs (``canary``: a stable hash of the job or client id), the
hosts ``report`` outcomes, and every report re-judges the trial, which passes (an ``evaluations`` row)
or aborts by itself (and rolls the version back if it was made current meanwhile). Each outcome is an
event in the LoRA's log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import case
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from registry.auth import Action, Principal
from registry.errors import AlreadyExists, Conflict, GateRefused, InvalidInput, NotFound
from registry.eval_schemas import (
    EvaluationIn,
    EvaluationPublic,
    GateStatus,
    Metrics,
    PhaseState,
    Pick,
    ReportIn,
    ReviewItem,
    TrialPublic,
)
from registry.models import Evaluation, Lora, Project, Status, Trial, TrialReport, Version, VersionFile, as_utc, utcnow
from registry.policy import PHASE_NUMBER, PHASES, Policy, ProjectPolicy
from registry.service import RegistryService

__all__ = ["EvaluationService", "canary", "files_digest", "gate_status"]


def files_digest(files: Iterable[tuple[str, str]]) -> str:
    """The identity of a version's files: sha256 over its sorted ``role:sha256`` lines."""
    lines = sorted(f"{role}:{sha256}" for role, sha256 in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def version_digest(session: Session, version_id: int | None) -> str:
    files = session.exec(select(VersionFile.role, VersionFile.sha256).where(VersionFile.version_id == version_id))
    return files_digest(files.all())


def canary(trial_id: int, key: str, share: float) -> bool:
    """Whether a job or client id falls in a trial's share: a stable hash, so the answer never changes
    for an id during a trial, and each trial draws its own share."""
    bucket = int.from_bytes(hashlib.sha256(f"{trial_id}:{key}".encode()).digest()[:8], "big") % 10_000
    return bucket < round(share * 100)


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
            if running is not None:
                state, detail = "running", f"trial {running.id} on {running.share:g}% of jobs is running"
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


class EvaluationService:
    """Evidence, trials and reports; permissions as in ``RegistryService`` (deny by default)."""

    def __init__(self, session: Session, *, principal: Principal, policy: Policy | None = None) -> None:
        self.session = session
        self.principal = principal
        self.policy = policy or Policy()
        self.registry = RegistryService(session, principal=principal, policy=self.policy)

    # -- phases 1 and 2 -----------------------------------------------------------------------------

    def _visible(self, project: str, name: str, version: str, *, lock: bool = False) -> tuple[Lora, Version]:
        _, lora = self.registry._lora(project, name, lock=lock)
        return lora, self.registry._version(lora, version, project)

    def digest(self, *, project: str, name: str, version: str) -> str:
        self.registry._require(project, Action.LORA_READ)
        _, row = self._visible(project, name, version)
        return version_digest(self.session, row.id)

    def record(self, *, project: str, name: str, version: str, result: EvaluationIn) -> EvaluationPublic:
        """Record a phase 1 or 2 result for the files it was made on; its scores join the version's."""
        self.registry._require(project, Action.VERSION_EVALUATE)
        lora, row = self._visible(project, name, version, lock=True)
        gate = gate_status(self.session, project, lora, row, self.policy.for_project(project))
        if result.digest != gate.digest:
            raise Conflict(
                f"the evaluated files ({result.digest[:12]}) are not the files of {project}/{name}@{row.version} "
                f"({gate.digest[:12]})",
                hint="evaluate the version's own files: `wanlora eval … NAME@VERSION` fetches them",
            )
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
        self.registry._event(
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
        self.registry._require(project, Action.LORA_READ)
        lora, row = self._visible(project, name, version)
        rows = self.session.exec(
            select(Evaluation).where(Evaluation.version_id == row.id).order_by(col(Evaluation.id))
        ).all()
        return [self._public(project, lora, row, e) for e in rows]

    def gate(self, *, project: str, name: str, version: str) -> GateStatus:
        self.registry._require(project, Action.LORA_READ)
        lora, row = self._visible(project, name, version)
        return gate_status(self.session, project, lora, row, self.policy.for_project(project))

    # -- phase 3: trials ----------------------------------------------------------------------------

    def _running(self, lora: Lora) -> Trial | None:
        return self.session.exec(select(Trial).where(Trial.lora_id == lora.id, Trial.status == "running")).first()

    def start_trial(
        self, *, project: str, name: str, version: str, share: float | None = None, reason: str | None = None
    ) -> TrialPublic:
        """Serve a testing version to a sticky share of jobs. Phases 1 and 2 must have passed first
        (those the policy requires)."""
        self.registry._require(project, Action.VERSION_TRIAL)
        lora, row = self._visible(project, name, version, lock=True)
        policy = self.policy.for_project(project)
        if row.status != Status.TESTING.value:
            raise Conflict(f"{project}/{name}@{row.version} is {row.status}; only a testing version goes on trial")
        if self._running(lora) is not None:
            raise Conflict(
                f"{project}/{name} already has a trial running", hint=f"`wanlora trial stop {name}` ends it first"
            )
        gate = gate_status(self.session, project, lora, row, policy)
        before = [p for p in gate.blocking() if p.phase != "trial"]
        if before:
            raise refusal(gate.model_copy(update={"phases": before}))
        settings = policy.trial.model_dump()
        share = settings["share"] if share is None else share
        if not 1 <= share <= 50:
            raise InvalidInput(f"trial share must be 1-50 percent, got {share:g}")
        current = self.registry._current(lora)
        trial = Trial(
            lora_id=lora.id or 0, version_id=row.id or 0, baseline_id=current.id if current else None,
            digest=gate.digest, share=share, settings=settings, started_by=self.principal.user, started_at=utcnow(),
        )  # fmt: skip
        self.session.add(trial)
        self.session.flush()
        self.registry._event(
            lora, "trial_started", version=row, reason=reason,
            details={"trial": trial.id, "share": share, "baseline": current.version if current else None},
        )  # fmt: skip
        return self._trial_public(project, lora, trial)

    def stop_trial(self, *, project: str, name: str, reason: str | None = None) -> TrialPublic:
        self.registry._require(project, Action.VERSION_TRIAL)
        _, lora = self.registry._lora(project, name, lock=True)
        trial = self._running(lora)
        if trial is None:
            raise NotFound(f"{project}/{name} has no trial running")
        self._end(lora, trial, "stopped", reason or "stopped by hand")
        return self._trial_public(project, lora, trial)

    def trial(self, *, project: str, name: str) -> TrialPublic:
        """The running trial (judged again now: a trial also passes by the clock), or the last one."""
        self.registry._require(project, Action.LORA_READ)
        _, lora = self.registry._lora(project, name, lock=True)
        trial = (
            self._running(lora)
            or self.session.exec(select(Trial).where(Trial.lora_id == lora.id).order_by(col(Trial.id).desc())).first()
        )
        if trial is None:
            raise NotFound(f"{project}/{name} has had no trial", hint=f"`wanlora trial start {name}@VERSION`")
        if trial.status == "running":
            self._judge(lora, trial)
        return self._trial_public(project, lora, trial)

    def _metrics(self, version: Version | None, since: datetime | None, until: datetime | None = None) -> Metrics:
        if version is None:
            return Metrics(version="")
        query = sa_select(
            func.count(),
            func.sum(case((col(TrialReport.success).is_(False), 1), else_=0)),
            func.avg(TrialReport.rating),
            func.count(col(TrialReport.rating)),
            func.avg(TrialReport.seconds),
        ).where(col(TrialReport.version_id) == version.id)
        if since is not None:
            query = query.where(col(TrialReport.at) >= since)
        if until is not None:
            query = query.where(col(TrialReport.at) < until)
        count, failures, rating, ratings, seconds = self.session.execute(query).one()
        failures = int(failures or 0)
        return Metrics(
            version=version.version, reports=count, failures=failures,
            error_rate=failures / count if count else None, rating=float(rating) if rating is not None else None,
            ratings=ratings, seconds=float(seconds) if seconds is not None else None,
        )  # fmt: skip

    def _verdict(self, trial: Trial) -> tuple[str, str]:
        """("pass" | "abort" | "wait", why) for a running trial, by its settings at the start."""
        s = trial.settings
        version = self.session.get(Version, trial.version_id)
        baseline = self.session.get(Version, trial.baseline_id) if trial.baseline_id else None
        started = as_utc(trial.started_at) or trial.started_at
        cand = self._metrics(version, started)
        base = self._metrics(baseline, started) if baseline else None
        rate = cand.error_rate or 0.0
        if cand.reports >= s["abort_after"] and rate > s["max_error_rate"]:
            return "abort", (
                f"error rate {rate:.1%} over {cand.reports} reports is above the limit of {s['max_error_rate']:.0%}"
            )
        waits = []
        if cand.reports < s["min_reports"]:
            waits.append(f"{s['min_reports'] - cand.reports} more report(s)")
        hours = (utcnow() - started).total_seconds() / 3600
        if hours < s["min_hours"]:
            waits.append(f"{s['min_hours'] - hours:.1f} more hour(s)")
        if waits:
            return "wait", "needs " + " and ".join(waits)
        problems = []
        if rate > s["max_error_rate"]:
            problems.append(f"error rate {rate:.1%} is above the limit of {s['max_error_rate']:.0%}")
        if base is not None and base.error_rate is not None and rate > base.error_rate + s["error_margin"]:
            problems.append(
                f"error rate {rate:.1%} is worse than the current's {base.error_rate:.1%} "
                f"beyond the margin of {s['error_margin']:.0%}"
            )
        base_rating = base.rating if base is not None else None
        if base_rating is not None and cand.rating is not None and cand.rating < base_rating - s["rating_margin"]:
            problems.append(
                f"rating {cand.rating:.2f} is below the current's {base_rating:.2f} "
                f"beyond the margin of {s['rating_margin']:g}"
            )
        if problems:
            return "abort", "; ".join(problems)
        against = f" (current {base.version}: {base.error_rate or 0:.1%})" if base and base.reports else ""
        rating = f", rating {cand.rating:.2f}" if cand.rating is not None else ""
        return "pass", f"{cand.reports} reports, error rate {rate:.1%}{against}{rating}"

    def _judge(self, lora: Lora, trial: Trial) -> None:
        verdict, why = self._verdict(trial)
        if verdict == "pass":
            self._end(lora, trial, "passed", why)
        elif verdict == "abort":
            self._end(lora, trial, "aborted", why)

    def _end(self, lora: Lora, trial: Trial, status: str, why: str) -> None:
        trial.status, trial.outcome, trial.ended_at = status, why, utcnow()
        self.session.add(trial)
        version = self.session.get(Version, trial.version_id)
        assert version is not None
        if status in ("passed", "aborted"):
            evaluation = Evaluation(
                version_id=version.id or 0, phase="trial", digest=trial.digest, passed=status == "passed",
                summary=why, details={"trial": trial.id, "share": trial.share}, created_by=f"trial:{trial.id}",
                created_at=utcnow(),
            )  # fmt: skip
            self.session.add(evaluation)
            self.session.flush()
        self.registry._event(
            lora, f"trial_{status}", version=version, reason=why, details={"trial": trial.id, "share": trial.share}
        )
        if status == "aborted" and version.status == Status.CURRENT.value:
            # It was made current meanwhile (an override): take it out of production at once.
            monitor = RegistryService(
                self.session, principal=Principal.local_admin(f"trial:{trial.id}"), policy=self.policy
            )
            project = self.session.get(Project, lora.project_id)
            assert project is not None
            try:
                monitor.rollback(project=project.name, name=lora.name, reason=f"trial {trial.id} aborted: {why}")
            except Conflict as exc:
                trial.outcome += f" (could not roll back: {exc.message})"
                self.session.add(trial)

    def _trial_public(self, project: str, lora: Lora, trial: Trial) -> TrialPublic:
        version = self.session.get(Version, trial.version_id)
        baseline = self.session.get(Version, trial.baseline_id) if trial.baseline_id else None
        assert version is not None
        started = as_utc(trial.started_at) or trial.started_at
        verdict = trial.outcome if trial.status != "running" else self._verdict(trial)[1]
        return TrialPublic(
            id=trial.id or 0, project=project, lora=lora.name, version=version.version,
            baseline=baseline.version if baseline else None, share=trial.share, status=trial.status,  # type: ignore[arg-type]
            started_by=trial.started_by, started_at=started, ended_at=as_utc(trial.ended_at), outcome=trial.outcome,
            settings=trial.settings, candidate=self._metrics(version, started),
            current=self._metrics(baseline, started) if baseline else None, verdict=verdict,
        )  # fmt: skip

    # -- serving and reports ------------------------------------------------------------------------

    def _servable(self, project: str, lora: Lora, version: str) -> tuple[Version, Trial | None]:
        """A version a puller may use: current, the running trial's candidate, or one it may read."""
        self.registry._require(project, Action.ARTIFACT_PULL)
        trial = self._running(lora)
        wanted = self.session.exec(
            select(Version).where(Version.lora_id == lora.id, Version.version == version)
        ).first()
        if wanted is not None and (
            wanted.status in self.registry._readable(project) or (trial and trial.version_id == wanted.id)
        ):
            return wanted, trial if trial and trial.version_id == wanted.id else None
        raise NotFound(f"{project}/{lora.name}@{version} does not exist or is not served")

    def _reportable(self, project: str, lora: Lora, version: str) -> tuple[Version, Trial | None]:
        """A version a host may report on: one it may use now, or one that was on trial (a job that ran
        during a trial may be reported after it ended)."""
        try:
            return self._servable(project, lora, version)
        except NotFound:
            row = self.session.exec(
                select(Version).where(Version.lora_id == lora.id, Version.version == version)
            ).first()
            if row is None or self.session.exec(select(Trial.id).where(Trial.version_id == row.id)).first() is None:
                raise
            return row, None

    def pick(self, *, project: str, name: str, key: str) -> Pick:
        """The version a job (or client) gets: the trial's candidate for its share, else the current."""
        self.registry._require(project, Action.ARTIFACT_PULL)
        if not key or len(key) > 128:
            raise InvalidInput("a job or client id is 1-128 characters")
        _, lora = self.registry._lora(project, name)
        trial = self._running(lora)
        chosen, in_trial = self.registry._current(lora), False
        if trial is not None and canary(trial.id or 0, key, trial.share):
            chosen, in_trial = self.session.get(Version, trial.version_id), True
        if chosen is None:
            raise NotFound(f"{project}/{name} has no current version", hint="promote one first")
        files = self.session.exec(select(VersionFile).where(VersionFile.version_id == chosen.id)).all()
        return Pick(
            project=project, lora=name, key=key, version=chosen.version, trial=in_trial,
            trial_id=trial.id if in_trial and trial else None,
            files=[{"role": f.role, "sha256": f.sha256, "size": f.size} for f in files],
        )  # fmt: skip

    def report(self, *, project: str, name: str, version: str, outcome: ReportIn) -> TrialPublic | None:
        """A host reports one job's outcome with a version; a running trial is judged again at once."""
        self.registry._require(project, Action.VERSION_REPORT)
        _, lora = self.registry._lora(project, name, lock=True)
        row, trial = self._reportable(project, lora, str(version).removeprefix("v"))
        duplicate = self.session.exec(
            select(TrialReport.id).where(TrialReport.version_id == row.id, TrialReport.job_id == outcome.job_id)
        ).first()
        if duplicate is not None:
            raise AlreadyExists(f"job {outcome.job_id!r} was already reported for {project}/{name}@{row.version}")
        self.session.add(
            TrialReport(
                version_id=row.id or 0,
                trial_id=trial.id if trial else None,
                job_id=outcome.job_id,
                client_id=outcome.client_id,
                success=outcome.success,
                rating=outcome.rating,
                seconds=outcome.seconds,
                error=outcome.error,
                reported_by=self.principal.user,
                at=utcnow(),
            )
        )
        self.session.flush()
        running = self._running(lora)
        if running is None:
            return None
        self._judge(lora, running)  # the candidate's and the current's reports both move the verdict
        return self._trial_public(project, lora, running)

    # -- monitoring ---------------------------------------------------------------------------------

    def metrics(self, *, project: str, name: str, days: float = 30) -> list[Metrics]:
        """Per version: reports, error rate, rating and generation time over the last ``days``."""
        self.registry._require(project, Action.LORA_READ)
        _, lora = self.registry._lora(project, name)
        since = utcnow() - timedelta(days=days)
        readable = self.registry._readable(project)
        return [self._metrics(v, since) for v in self.registry._versions(lora) if v.status in readable]

    def review(self, *, project: str | None = None) -> list[ReviewItem]:
        """The monthly review: current versions whose metrics drifted (the recent window against the
        one before it) or that should be retrained (old training, low rating)."""
        now = utcnow()
        items = []
        for v, lora, proj in self.registry.current_rows(project=project, action=Action.LORA_READ):
            r = self.policy.for_project(proj.name).review
            recent_start = now - timedelta(days=r.window_days)
            recent = self._metrics(v, recent_start)
            before = self._metrics(v, recent_start - timedelta(days=r.baseline_days), recent_start)
            reasons: list[str] = []
            drift = recent.reports >= r.min_reports and before.reports >= r.min_reports
            if drift and (recent.error_rate or 0) > (before.error_rate or 0) + r.error_rate_rise:
                reasons.append(f"error rate rose from {before.error_rate:.1%} to {recent.error_rate:.1%}")
            rated = drift and recent.rating is not None and before.rating is not None
            if rated and recent.rating < before.rating - r.rating_drop:  # type: ignore[operator]
                reasons.append(f"rating fell from {before.rating:.2f} to {recent.rating:.2f}")
            if drift and recent.seconds and before.seconds and recent.seconds > before.seconds * (1 + r.slowdown):
                reasons.append(f"generation time rose from {before.seconds:.1f} s to {recent.seconds:.1f} s")
            action: Literal["investigate", "retrain"] = "investigate"
            trained = as_utc(v.training_date) or as_utc(v.created_at)
            if trained is not None and (now - trained).days > r.retrain_after_days:
                reasons.append(f"trained {(now - trained).days} days ago (retrain after {r.retrain_after_days:g})")
                action = "retrain"
            if recent.rating is not None and recent.ratings >= r.min_reports and recent.rating < r.min_rating:
                reasons.append(f"rating {recent.rating:.2f} is under {r.min_rating:g}")
                action = "retrain"
            if reasons:
                items.append(
                    ReviewItem(
                        project=proj.name,
                        lora=lora.name,
                        version=v.version,
                        status=v.status,
                        action=action,
                        reasons=reasons,
                        recent=recent,
                        baseline=before,
                    )
                )
        return items

    def policy_for(self, *, project: str) -> dict[str, Any]:
        """The effective policy of a project (the default with the project's overrides)."""
        self.registry._require(project, Action.LORA_READ)
        return self.policy.for_project(project).model_dump(mode="json")
