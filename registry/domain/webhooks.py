"""Webhooks as callers see them: the events, the signature and the public shapes."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from pydantic import BaseModel

__all__ = ["EVENT_KINDS", "DeliveryPublic", "WebhookCreated", "WebhookPublic", "sign"]

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
