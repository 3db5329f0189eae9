"""Webhooks (admins): add, list, remove, and the delivery log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import CallerDep, IdPath, IdQuery
from api.errors import ERROR_RESPONSES
from registry.domain.webhooks import DeliveryPublic, PingResult, WebhookCreated, WebhookPublic

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"], responses=ERROR_RESPONSES)


class WebhookCreate(BaseModel):
    url: str = Field(examples=["https://chat.example/hooks/wanlora"])
    project: str = Field(examples=["brandx"], description="A project, or '*' for every project.")
    events: list[str] = Field(examples=[["register", "promote", "rollback", "deprecate"]])
    secret: str | None = Field(
        default=None, description="HMAC key, 16 bytes to 128 characters; generated when omitted (and returned once)."
    )
    timeout_seconds: float = Field(default=5.0, description="One attempt's whole budget, 0.5-30 seconds.")


@router.post("", status_code=201, summary="Add a webhook; its secret is in this answer only")
def add_webhook(body: WebhookCreate, caller: CallerDep) -> WebhookCreated:
    with caller.webhooks() as hooks:
        return hooks.add(
            url=body.url, project=body.project, events=body.events, secret=body.secret, timeout=body.timeout_seconds
        )


@router.get("", summary="Webhooks this caller manages")
def list_webhooks(caller: CallerDep) -> list[WebhookPublic]:
    with caller.webhooks(write=False) as hooks:
        return hooks.list_webhooks()


@router.delete("/{webhook_id}", summary="Stop a webhook (its delivery log is kept)")
def remove_webhook(webhook_id: IdPath, caller: CallerDep) -> WebhookPublic:
    with caller.webhooks() as hooks:
        return hooks.remove(webhook_id=webhook_id)


@router.post("/{webhook_id}/test", summary="Send a signed ping now (outside the delivery log)")
def test_webhook(webhook_id: IdPath, caller: CallerDep) -> PingResult:
    with caller.webhooks(write=False) as hooks:
        return hooks.test(webhook_id=webhook_id)


@router.get("/deliveries", summary="The delivery log, newest first")
def deliveries(
    caller: CallerDep,
    webhook_id: IdQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[DeliveryPublic]:
    with caller.webhooks(write=False) as hooks:
        return hooks.deliveries(webhook_id=webhook_id, limit=limit)
