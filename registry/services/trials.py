"""Phase 3: a candidate on a sticky share of jobs (``canary``), the hosts' reports, and the verdict
that passes the trial or aborts it (rolling back a version an override made current meanwhile)."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from registry.db.tables import Evaluation, Lora, Project, Trial, TrialReport, Version, VersionFile
from registry.domain.access import Action, Principal
from registry.domain.clock import as_utc, utcnow
from registry.domain.digests import canary
from registry.domain.enums import Status
from registry.domain.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from registry.domain.eval_schemas import Pick, ReportIn, TrialPublic
from registry.domain.limits import MAX_REASON, check_text
from registry.services.gate import gate_status, refusal
from registry.services.lifecycle import LifecycleService
from registry.services.lookups import current_version, lora_and_version, lora_row, record_event
from registry.services.monitoring import version_metrics
from registry.services.scope import Service

__all__ = ["TrialService"]


class TrialService(Service):
    def _running(self, lora: Lora) -> Trial | None:
        return self.session.exec(select(Trial).where(Trial.lora_id == lora.id, Trial.status == "running")).first()

    def start_trial(
        self, *, project: str, name: str, version: str, share: float | None = None, reason: str | None = None
    ) -> TrialPublic:
        """Serve a testing version to a sticky share of jobs. Phases 1 and 2 must have passed first
        (those the policy requires)."""
        self.scope.require(project, Action.VERSION_TRIAL)
        check_text(reason, "reason", MAX_REASON)
        lora, row = lora_and_version(self.scope, project, name, version, lock=True)
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
        current = current_version(self.scope, lora)
        trial = Trial(
            lora_id=lora.id or 0, version_id=row.id or 0, baseline_id=current.id if current else None,
            digest=gate.digest, share=share, settings=settings, started_by=self.principal.user, started_at=utcnow(),
        )  # fmt: skip
        self.session.add(trial)
        self.session.flush()
        record_event(self.scope,
            lora, "trial_started", version=row, reason=reason,
            details={"trial": trial.id, "share": share, "baseline": current.version if current else None},
        )  # fmt: skip
        return self._trial_public(project, lora, trial)

    def stop_trial(self, *, project: str, name: str, reason: str | None = None) -> TrialPublic:
        self.scope.require(project, Action.VERSION_TRIAL)
        check_text(reason, "reason", MAX_REASON)
        _, lora = lora_row(self.scope, project, name, lock=True)
        trial = self._running(lora)
        if trial is None:
            raise NotFound(f"{project}/{name} has no trial running")
        self._end(lora, trial, "stopped", reason or "stopped by hand")
        return self._trial_public(project, lora, trial)

    def trial(self, *, project: str, name: str) -> TrialPublic:
        """The running trial (judged again now: a trial also passes by the clock), or the last one. It
        names a testing version and its metrics: only callers who may see testing versions get it."""
        self.scope.require(project, Action.VERSION_READ_TESTING)
        _, lora = lora_row(self.scope, project, name, lock=True)
        trial = (
            self._running(lora)
            or self.session.exec(select(Trial).where(Trial.lora_id == lora.id).order_by(col(Trial.id).desc())).first()
        )
        if trial is None:
            raise NotFound(f"{project}/{name} has had no trial", hint=f"`wanlora trial start {name}@VERSION`")
        if trial.status == "running":
            self._judge(lora, trial)
        return self._trial_public(project, lora, trial)

    def _settings(self, trial: Trial) -> dict[str, Any]:
        """The trial's settings: its share as it started, the thresholds as the project's policy says now
        (an edit to the policy applies to a running trial at its next judgement)."""
        lora = self.session.get(Lora, trial.lora_id)
        project = self.session.get(Project, lora.project_id) if lora else None
        if project is None:
            return dict(trial.settings)
        now = self.policy.for_project(project.name).trial.model_dump()
        now.pop("share", None)
        return {**trial.settings, **now}

    def _verdict(self, trial: Trial) -> tuple[str, str]:
        """("pass" | "abort" | "wait", why) for a running trial, by the policy's current thresholds."""
        s = self._settings(trial)
        version = self.session.get(Version, trial.version_id)
        baseline = self.session.get(Version, trial.baseline_id) if trial.baseline_id else None
        started = as_utc(trial.started_at) or trial.started_at
        cand = version_metrics(self.session, version, started)
        base = version_metrics(self.session, baseline, started) if baseline else None
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
        record_event(
            self.scope,
            lora,
            f"trial_{status}",
            version=version,
            reason=why,
            details={"trial": trial.id, "share": trial.share},
        )
        if status == "aborted" and version.status == Status.CURRENT.value:
            # It was made current meanwhile (an override): take it out of production at once.
            monitor = LifecycleService(
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
            settings=self._settings(trial) if trial.status == "running" else trial.settings, candidate=version_metrics(self.session, version, started),
            current=version_metrics(self.session, baseline, started) if baseline else None, verdict=verdict,
        )  # fmt: skip

    def _reportable(self, project: str, lora: Lora, version: str, outcome: ReportIn) -> tuple[Version, Trial | None]:
        """A version a host may report on: one the caller may see, or a trial's candidate (running or
        ended: a job that ran during a trial may be reported after it) when the report's job or client
        falls in that trial's share, as only they were given the candidate."""
        self.scope.require(project, Action.ARTIFACT_PULL)
        row = self.session.exec(select(Version).where(Version.lora_id == lora.id, Version.version == version)).first()
        if row is None:
            raise NotFound(f"{project}/{lora.name}@{version} does not exist or is not served")
        running = self._running(lora)
        on_trial = running if running is not None and running.version_id == row.id else None
        if row.status in self.scope.readable(project):
            return row, on_trial
        trials = self.session.exec(select(Trial).where(Trial.version_id == row.id).order_by(col(Trial.id).desc())).all()
        keys = [k for k in (outcome.client_id, outcome.job_id) if k]
        for trial in trials:
            if any(canary(trial.id or 0, key, trial.share) for key in keys):
                return row, trial if trial.status == "running" else None
        raise NotFound(f"{project}/{lora.name}@{version} does not exist or is not served")

    def pick(self, *, project: str, name: str, key: str) -> Pick:
        """The version a job (or client) gets: the trial's candidate for its share, else the current."""
        self.scope.require(project, Action.ARTIFACT_PULL)
        if not key or len(key) > 128:
            raise InvalidInput("a job or client id is 1-128 characters")
        _, lora = lora_row(self.scope, project, name)
        trial = self._running(lora)
        chosen, in_trial = current_version(self.scope, lora), False
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
        self.scope.require(project, Action.VERSION_REPORT)
        _, lora = lora_row(self.scope, project, name, lock=True)
        row, trial = self._reportable(project, lora, str(version).removeprefix("v"), outcome)
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
        if not self.scope.can(project, Action.VERSION_READ_TESTING):
            return None  # the candidate and its metrics are for those who may see testing versions
        return self._trial_public(project, lora, running)
