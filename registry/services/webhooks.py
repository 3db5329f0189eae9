"""Webhooks: signed notifications of register, promote, rollback, deprecate, evaluations and trials.

The change and its deliveries are written in one transaction (an outbox), and a dispatcher delivers
them afterwards, so a slow or failing receiver can never block or fail the change itself. Each delivery
is a JSON POST signed with HMAC-SHA256 over a timestamp and the body (``X-Wanlora-Signature:
t=<unix seconds>,v1=<hex>``, see docs/webhooks.md), sent only to public addresses (egress.py), retried
with exponential backoff, and logged (``wanlora webhook deliveries``).
"""

from __future__ import annotations

import secrets

from sqlmodel import Session, col, select

from registry.db.tables import Event, Lora, Project, Version, Webhook, WebhookDelivery
from registry.domain.access import ALL_PROJECTS, Action, Principal
from registry.domain.clock import as_utc, utcnow
from registry.domain.errors import InvalidInput, NotFound
from registry.domain.schemas import check_name
from registry.domain.webhooks import _BY_KIND, EVENT_KINDS, DeliveryPublic, PingResult, WebhookCreated, WebhookPublic
from registry.services.access import Authorizer, default_authorizer
from registry.services.egress import EgressPolicy

__all__ = ["WebhookService", "enqueue"]


def _public(h: Webhook) -> WebhookPublic:
    return WebhookPublic(
        id=h.id or 0,
        url=h.url,
        project=h.project,
        events=list(h.events),
        active=h.active,
        timeout_seconds=h.timeout_seconds,
        created_by=h.created_by,
        created_at=as_utc(h.created_at) or h.created_at,
    )


def enqueue(session: Session, event: Event, lora: Lora, version: Version | None) -> None:
    """Queue a delivery to every matching webhook, in the transaction that records the event."""
    name = _BY_KIND.get(event.kind)
    if name is None:
        return
    project = session.get(Project, lora.project_id)
    assert project is not None
    hooks = session.exec(
        select(Webhook).where(Webhook.active == True, col(Webhook.project).in_([project.name, ALL_PROJECTS]))  # noqa: E712
    ).all()
    payload = {
        "event": name,
        "event_id": event.id,
        "project": project.name,
        "lora": lora.name,
        "category": lora.category,
        "version": version.version if version else None,
        "status": event.to_status,
        "changelog": version.changelog if version else None,
        "scores": dict(version.scores or {}) if version else {},
        "actor": event.actor,
        "at": event.at.isoformat(),
        "reason": event.reason,
        "details": event.details,
    }
    for hook in hooks:
        if name in hook.events:
            session.add(
                WebhookDelivery(
                    webhook_id=hook.id,
                    event_id=event.id,
                    kind=name,
                    payload=payload,
                    next_attempt_at=event.at,
                    created_at=event.at,
                )
            )


MAX_URL = 2048  # the webhooks table's columns
MIN_SECRET, MAX_SECRET = 16, 128
MIN_TIMEOUT, MAX_TIMEOUT = 0.5, 30.0


class WebhookService:
    def __init__(
        self,
        session: Session,
        *,
        principal: Principal,
        authorizer: Authorizer | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.session = session
        self.principal = principal
        self.authz = authorizer or default_authorizer()
        self.egress = egress or EgressPolicy()

    def _require(self, project: str) -> None:
        self.authz.require(self.principal, project, Action.WEBHOOK_MANAGE)

    def add(
        self, *, url: str, project: str, events: list[str], secret: str | None = None, timeout: float = 5.0
    ) -> WebhookCreated:
        if len(url) > MAX_URL:
            raise InvalidInput(f"a webhook URL is at most {MAX_URL} characters, this one {len(url):,}")
        self.egress.check_static(url)
        if secret is not None and not (len(secret.encode()) >= MIN_SECRET and len(secret) <= MAX_SECRET):
            raise InvalidInput(
                f"a webhook secret is {MIN_SECRET} bytes to {MAX_SECRET} characters, this one {len(secret)}",
                hint="leave --secret out and wanlora generates one",
            )
        if not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT:
            raise InvalidInput(f"a webhook timeout is {MIN_TIMEOUT:g}-{MAX_TIMEOUT:g} seconds, not {timeout:g}")
        unknown = sorted(set(events) - set(EVENT_KINDS))
        if unknown or not events:
            raise InvalidInput(
                f"unknown webhook events {unknown}" if unknown else "a webhook needs at least one event",
                hint=f"choose from: {', '.join(EVENT_KINDS)}",
            )
        if project != ALL_PROJECTS:
            check_name(project, "project name")
        self._require(project)
        hook = Webhook(
            url=url,
            project=project,
            events=sorted(set(events)),
            secret=secret or secrets.token_urlsafe(32),
            timeout_seconds=timeout,
            created_by=self.principal.user,
            created_at=utcnow(),
        )
        self.session.add(hook)
        self.session.flush()
        return WebhookCreated(**_public(hook).model_dump(), secret=hook.secret)

    def list_webhooks(self) -> list[WebhookPublic]:
        rows = self.session.exec(select(Webhook).order_by(col(Webhook.id))).all()
        return [_public(h) for h in rows if self.authz.allowed(self.principal, h.project, Action.WEBHOOK_MANAGE)]

    def _hook(self, webhook_id: int) -> Webhook:
        hook = self.session.get(Webhook, webhook_id)
        if hook is None or not self.authz.allowed(self.principal, hook.project, Action.WEBHOOK_MANAGE):
            raise NotFound(f"webhook {webhook_id} does not exist", hint="see `wanlora webhook list`")
        return hook

    def test(self, *, webhook_id: int) -> PingResult:
        """Send the hook a signed ``ping`` now, through the same address checks as every delivery."""
        hook = self._hook(webhook_id)
        from registry.services.delivery import ping  # the sender (httpx) loads only when something is sent

        code, error = ping(self.egress, hook)
        return PingResult(webhook_id=hook.id or 0, url=hook.url, delivered=error is None, status_code=code, error=error)

    def remove(self, *, webhook_id: int) -> WebhookPublic:
        hook = self._hook(webhook_id)
        hook.active = False  # kept for the delivery log; it receives nothing more
        self.session.add(hook)
        self.session.flush()
        return _public(hook)

    def deliveries(self, *, webhook_id: int | None = None, limit: int = 50) -> list[DeliveryPublic]:
        query = select(WebhookDelivery).order_by(col(WebhookDelivery.id).desc()).limit(limit)
        if webhook_id is not None:
            self._hook(webhook_id)
            query = query.where(WebhookDelivery.webhook_id == webhook_id)
        visible = {
            h.id
            for h in self.session.exec(select(Webhook)).all()
            if self.authz.allowed(self.principal, h.project, Action.WEBHOOK_MANAGE)
        }
        return [
            DeliveryPublic(
                id=d.id or 0,
                webhook_id=d.webhook_id,
                event_id=d.event_id,
                kind=d.kind,
                status=d.status,
                attempts=d.attempts,
                last_status_code=d.last_status_code,
                last_error=d.last_error,
                next_attempt_at=as_utc(d.next_attempt_at) or d.next_attempt_at,
                delivered_at=as_utc(d.delivered_at),
                created_at=as_utc(d.created_at) or d.created_at,
            )
            for d in self.session.exec(query).all()
            if d.webhook_id in visible
        ]
