"""The webhook dispatcher: claims due deliveries (SKIP LOCKED leases), POSTs them signed, retries
with exponential backoff and logs every attempt."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import httpx
from sqlmodel import col, select

from registry.db.engine import Database
from registry.db.tables import Webhook, WebhookDelivery
from registry.domain.clock import utcnow
from registry.domain.webhooks import sign

__all__ = ["Dispatcher"]


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
