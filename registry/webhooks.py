"""Webhooks: signed notifications of register, promote, rollback and deprecate.

The change and its deliveries are written in one transaction (an outbox), and a dispatcher delivers
them afterwards, so a slow or failing receiver can never block or fail the change itself. Each delivery
is a JSON POST signed with HMAC-SHA256 (``X-Wanlora-Signature: sha256=<hex>``), retried with
exponential backoff, and logged (``wanlora webhook deliveries``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import httpx
from pydantic import BaseModel
from sqlmodel import Session, col, select

from registry.auth import ALL_PROJECTS, Action, Authorizer, Principal, default_authorizer
from registry.db import Database
from registry.errors import InvalidInput, NotFound
from registry.models import Event, Lora, Project, Version, Webhook, WebhookDelivery, as_utc, utcnow
from registry.schemas import check_name

__all__ = ["EVENT_KINDS", "DeliveryPublic", "Dispatcher", "WebhookCreated", "WebhookPublic", "WebhookService", "sign"]

# webhook event name -> event-log kind that fires it
EVENT_KINDS = {"register": "registered", "promote": "promoted", "rollback": "restored", "deprecate": "deprecated"}
_BY_KIND = {kind: name for name, kind in EVENT_KINDS.items()}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookPublic(BaseModel):
    id: int
    url: str
    project: str
    events: list[str]
    active: bool
    created_by: str
    created_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str  # shown once: the receiver verifies X-Wanlora-Signature with it


class DeliveryPublic(BaseModel):
    id: int
    webhook_id: int
    event_id: int
    kind: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime
    delivered_at: datetime | None
    created_at: datetime


def _public(h: Webhook) -> WebhookPublic:
    return WebhookPublic(
        id=h.id or 0,
        url=h.url,
        project=h.project,
        events=list(h.events),
        active=h.active,
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


class WebhookService:
    def __init__(self, session: Session, *, principal: Principal, authorizer: Authorizer | None = None) -> None:
        self.session = session
        self.principal = principal
        self.authz = authorizer or default_authorizer()

    def _require(self, project: str) -> None:
        self.authz.require(self.principal, project, Action.WEBHOOK_MANAGE)

    def add(self, *, url: str, project: str, events: list[str], secret: str | None = None) -> WebhookCreated:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidInput(f"invalid webhook URL {url!r}", hint="use an http:// or https:// URL")
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


class Dispatcher:
    """Delivers due webhook deliveries. Safe to run in several processes: a claimed delivery is leased
    (its next attempt pushed past the request timeout) before it is sent, with SKIP LOCKED on PostgreSQL."""

    def __init__(
        self,
        db: Database,
        *,
        client: httpx.Client | None = None,
        timeout: float = 5.0,
        max_attempts: int = 8,
        base_delay: float = 2.0,
        max_delay: float = 3600.0,
    ) -> None:
        self.db = db
        self.client = client or httpx.Client(timeout=timeout, follow_redirects=False)
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay

    def backoff(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.max_delay, self.base_delay * 2 ** (attempts - 1)))

    def _claim(self, limit: int) -> list[tuple[int, str, str, dict[str, Any], str]]:
        now = utcnow()
        with self.db.session() as s:
            rows = s.exec(
                select(WebhookDelivery, Webhook)
                .join(Webhook, col(Webhook.id) == WebhookDelivery.webhook_id)
                .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
                .order_by(col(WebhookDelivery.id))
                .limit(limit)
                .with_for_update(skip_locked=True, of=WebhookDelivery)
            ).all()
            claimed = []
            for delivery, hook in rows:
                delivery.attempts += 1
                delivery.next_attempt_at = now + timedelta(seconds=self.timeout * 4)  # the lease
                s.add(delivery)
                claimed.append((delivery.id or 0, hook.url, hook.secret, delivery.payload, delivery.kind))
            return claimed

    def _send(
        self, delivery_id: int, url: str, secret: str, payload: dict[str, Any], kind: str
    ) -> tuple[int | None, str | None]:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "wanlora-webhook/1",
            "X-Wanlora-Event": kind,
            "X-Wanlora-Delivery": str(delivery_id),
            "X-Wanlora-Signature": sign(secret, body),
        }
        try:
            response = self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        return response.status_code, None if response.is_success else f"HTTP {response.status_code}"

    def run_once(self, limit: int = 50) -> int:
        """Deliver what is due; returns how many were attempted."""
        claimed = self._claim(limit)
        for delivery_id, url, secret, payload, kind in claimed:
            code, error = self._send(delivery_id, url, secret, payload, kind)
            with self.db.session() as s:
                d = s.get(WebhookDelivery, delivery_id)
                assert d is not None
                d.last_status_code, d.last_error = code, error
                if error is None:
                    d.status, d.delivered_at = "delivered", utcnow()
                elif d.attempts >= self.max_attempts:
                    d.status = "failed"
                else:
                    d.next_attempt_at = utcnow() + self.backoff(d.attempts)
                s.add(d)
        return len(claimed)

    def run_forever(self, stop: threading.Event, interval: float = 0.5) -> None:
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # a database hiccup must not kill the dispatcher; try again shortly
                busy = 0
            if not busy:
                stop.wait(interval)
