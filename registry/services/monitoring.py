"""Monitoring: per-version metrics from the hosts' reports, and the monthly review (drift, retraining due)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import case
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func

from registry.db.tables import TrialReport, Version
from registry.domain.access import Action
from registry.domain.clock import as_utc, utcnow
from registry.domain.eval_schemas import Metrics, ReviewItem
from registry.services.lookups import current_rows, lora_row, versions_of
from registry.services.scope import Service

__all__ = ["MonitoringService", "version_metrics"]


def version_metrics(
    session: Session, version: Version | None, since: datetime | None, until: datetime | None = None
) -> Metrics:
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
    count, failures, rating, ratings, seconds = session.execute(query).one()
    failures = int(failures or 0)
    return Metrics(
        version=version.version, reports=count, failures=failures,
        error_rate=failures / count if count else None, rating=float(rating) if rating is not None else None,
        ratings=ratings, seconds=float(seconds) if seconds is not None else None,
    )  # fmt: skip


class MonitoringService(Service):
    def metrics(self, *, project: str, name: str, days: float = 30) -> list[Metrics]:
        """Per version: reports, error rate, rating and generation time over the last ``days``."""
        self.scope.require(project, Action.LORA_READ)
        _, lora = lora_row(self.scope, project, name)
        since = utcnow() - timedelta(days=days)
        readable = self.scope.readable(project)
        return [version_metrics(self.session, v, since) for v in versions_of(self.scope, lora) if v.status in readable]

    def review(self, *, project: str | None = None) -> list[ReviewItem]:
        """The monthly review: current versions whose metrics drifted (the recent window against the
        one before it) or that should be retrained (old training, low rating)."""
        now = utcnow()
        items = []
        for v, lora, proj in current_rows(self.scope, project=project, action=Action.LORA_READ):
            r = self.policy.for_project(proj.name).review
            recent_start = now - timedelta(days=r.window_days)
            recent = version_metrics(self.session, v, recent_start)
            before = version_metrics(self.session, v, recent_start - timedelta(days=r.baseline_days), recent_start)
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
