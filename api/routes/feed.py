"""The change feed: a long poll that answers as soon as the event log moves (for `sync --watch`)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep
from api.errors import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["feed"], responses=ERROR_RESPONSES)


class Changes(BaseModel):
    last_event_id: int
    changed: bool


@router.get("/changes", summary="Wait until the event log moves past `since` (long poll)")
async def changes(
    caller: CallerDep,
    since: Annotated[int, Query(ge=0, le=2**63 - 1, description="The last event id the caller has seen.")] = 0,
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for a change.")] = 25,
) -> Changes:
    """Answers at once when there is a newer event, else within `wait` seconds (checking every 50 ms);
    the caller then resolves again. One cheap query per check, no tight client loop."""

    def latest() -> int:
        with caller.registry(write=False) as reg:
            return reg.last_event_id()

    deadline = time.monotonic() + wait
    current = await run_in_threadpool(latest)
    while current <= since and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        current = await run_in_threadpool(latest)
    return Changes(last_event_id=current, changed=current > since)
