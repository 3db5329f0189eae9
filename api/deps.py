"""Typed dependencies: the server state, and the caller (the registry acting for the request's token)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.cache import AuthCache, Generation, ResponseCache
from api.ratelimit import SignInLimiter
from registry.backends.local import Wanlora
from registry.domain.access import Principal
from registry.domain.errors import Unauthenticated
from registry.settings import Settings


class LocalSignIn:
    """`wanlora dashboard`'s one-time codes: each signs a browser in as the local user once, within
    ``seconds``. Only their hashes are kept; a server started any other way has none."""

    def __init__(self, user: str, seconds: float = 120.0) -> None:
        self.user = user
        self.seconds = seconds
        self._codes: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self) -> str:
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._codes[hashlib.sha256(code.encode()).hexdigest()] = time.monotonic() + self.seconds
        return code

    def redeem(self, code: str) -> bool:
        with self._lock:
            deadline = self._codes.pop(hashlib.sha256(code.encode()).hexdigest(), None)
        return deadline is not None and time.monotonic() < deadline


@dataclass
class ServerState:
    wl: Wanlora  # the registry as the server itself (local admin); never handed to a route as is
    settings: Settings
    uploads: Path
    max_upload_bytes: int
    auth: AuthCache = field(default_factory=lambda: AuthCache(0))
    generation: Generation | None = None
    responses: ResponseCache = field(default_factory=ResponseCache)
    sign_ins: SignInLimiter = field(default_factory=SignInLimiter)
    local_sign_in: LocalSignIn | None = None  # set by `wanlora dashboard` alone


# Row ids are 32-bit in PostgreSQL; anything larger is a 422, never an overflow deep in the driver.
MAX_ID = 2**31 - 1
IdPath = Annotated[int, PathParam(ge=1, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]

bearer = HTTPBearer(auto_error=False, description="An API token from `wanlora token create`.")


async def get_state(request: Request) -> ServerState:
    """Async, so that FastAPI calls it on the event loop: a sync dependency costs every request a hop
    through the thread pool (most of a cached resolve's time under load)."""
    state: ServerState = request.app.state.wanlora
    return state


StateDep = Annotated[ServerState, Depends(get_state)]


async def get_caller(
    request: Request, state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Wanlora:
    """The registry acting for the token's principal; 401 for no, a bad, an expired or a revoked token,
    429 after too many bad ones. A token checked moments ago is answered from memory, without leaving
    the event loop."""
    token = credentials.credentials if credentials else None
    if not token:
        return state.wl.as_principal(await run_in_threadpool(_authenticate, state, token, client_address(request)))
    remembered, due = state.auth.lookup(token)
    if not due and remembered is not None:
        return state.wl.as_principal(remembered)
    checked = state.auth.check(token, partial(_authenticate, state, token, client_address(request)))
    if remembered is None:
        return state.wl.as_principal(await checked)
    # still good for a moment: answer now, and let the check land in the cache
    asyncio.ensure_future(checked).add_done_callback(_quietly)
    return state.wl.as_principal(remembered)


def _quietly(task: asyncio.Future[Principal]) -> None:
    """A background re-check that failed (a token revoked meanwhile) has dropped nothing but itself:
    the next request checks again and is refused."""
    if not task.cancelled():
        task.exception()


def client_address(request: Request) -> str:
    """The peer's address (a proxy's X-Forwarded-For is not trusted: anyone can write it)."""
    return request.client.host if request.client else "unknown"


def authenticate_token(state: ServerState, token: str | None, address: str) -> Principal:
    """The token's principal (remembered a moment), or Unauthenticated (TooManyFailures after many)."""
    principal = state.auth.get(token) if token else None
    return principal if principal is not None else _authenticate(state, token, address)


def _authenticate(state: ServerState, token: str | None, address: str) -> Principal:
    if token:  # no token at all is not a guess: it is told 401, and not counted
        state.sign_ins.check(address, token)
    try:
        with state.wl.accounts(write=False) as accounts:
            principal, expires_at = accounts.authenticate_with_expiry(token)
    except Unauthenticated:
        if token:
            state.auth.forget(token)  # a token revoked since it was remembered stops here
        state.sign_ins.failed(address, token)
        raise
    state.auth.put(token or "", principal, expires_at)
    return principal


CallerDep = Annotated[Wanlora, Depends(get_caller)]
