"""Webhooks as callers see them: the events, the signature and the public shapes."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime

from pydantic import BaseModel

__all__ = [
    "EVENT_KINDS",
    "SIGNATURE_TOLERANCE",
    "DeliveryPublic",
    "PingResult",
    "WebhookCreated",
    "WebhookPublic",
    "sign",
    "verify",
]

# webhook event name -> event-log kind that fires it
EVENT_KINDS = {
    "register": "registered",
    "promote": "promoted",
    "rollback": "restored",
    "deprecate": "deprecated",
    "evaluate": "evaluated",  # a phase 1 or 2 result recorded
    "trial_start": "trial_started",
    "trial_pass": "trial_passed",
    "trial_abort": "trial_aborted",
    "trial_stop": "trial_stopped",
}
_BY_KIND = {kind: name for name, kind in EVENT_KINDS.items()}


SIGNATURE_TOLERANCE = 300  # seconds: how old a signed timestamp a receiver should accept


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """``X-Wanlora-Signature``: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`` (Stripe's form).
    The timestamp is signed with the body, so a captured delivery cannot be replayed later."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance: int = SIGNATURE_TOLERANCE, now: float | None = None
) -> bool:
    """What a receiver does with ``X-Wanlora-Signature``: True when one ``v1`` matches the raw body
    and the signed timestamp is within ``tolerance`` seconds of now."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = _mac(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))


class WebhookPublic(BaseModel):
    id: int
    url: str
    project: str
    events: list[str]
    active: bool
    timeout_seconds: float
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


class PingResult(BaseModel):
    """What a test ping to a webhook got back (sent now, outside the delivery log)."""

    webhook_id: int
    url: str
    delivered: bool
    status_code: int | None
    error: str | None
