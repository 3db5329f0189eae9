"""The change feed: a long poll that answers as soon as the event log moves (for `sync --watch`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, StateDep
from api.errors import ERROR_RESPONSES
from registry.backends.local import Wanlora

router = APIRouter(prefix="/api/v1", tags=["feed"], responses=ERROR_RESPONSES)


class Changes(BaseModel):
    last_event_id: int
    changed: bool


@router.get("/changes", summary="Wait until the event log moves past `since` (long poll)")
async def changes(
    caller: CallerDep,
    state: StateDep,
    since: Annotated[int, Query(ge=0, le=2**63 - 1, description="The last event id the caller has seen.")] = 0,
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for a change.")] = 25,
) -> Changes:
    """Answers at once when there is a newer event, else as soon as one lands, or after `wait` seconds;
    the caller then resolves again. A parked request waits on the process's change watcher (LISTEN on
    PostgreSQL, the database files on SQLite): it costs no query while nothing happens."""
    generation = state.generation
    assert generation is not None
    current = await run_in_threadpool(_latest, caller)  # this caller's view, read once
    if current <= since and wait > 0:
        current = max(current, await generation.wait_past(since, wait))
    return Changes(last_event_id=current, changed=current > since)


def _latest(caller: Wanlora) -> int:
    with caller.registry(write=False) as reg:
        return reg.last_event_id()
