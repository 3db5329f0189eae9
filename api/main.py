"""The application factory: settings in, a wired FastAPI app out. Nothing connects at import time."""

from __future__ import annotations

import gc
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors, web
from api.bodylimit import BodyLimit
from api.cache import AuthCache, Generation
from api.deps import LocalSignIn, ServerState
from api.ratelimit import SignInLimiter
from api.routes import accounts, evaluation, feed, files, loras, webhooks
from registry.backends.local import Wanlora
from registry.backends.uploads import sweep_uploads
from registry.domain.accounts import TokenCreated
from registry.services.delivery import Dispatcher
from registry.settings import Settings

DESCRIPTION = """Versioned registry and deployment manager for WAN 2.2 LoRA adapters.

Authenticate with `Authorization: Bearer <token>` (tokens from `wanlora token create`). Every error is
`{"error": {"code", "message", "hint"}}`; 401 means no, a bad, an expired or a revoked token, 403 a
role that does not allow the call, 404 also what this role may not see.
"""

# The longest the webhook dispatcher sleeps without a nudge: the change watcher nudges it whenever the
# event log moves, so this only bounds how late a delivery could be if a change signal were ever missed.
DISPATCH_SAFETY_NET = 30.0


class FreshAfterWrites:
    """A change made through this process is visible to its very next read (other processes see it
    within change_check_seconds). Plain ASGI, so reads pay nothing for it."""

    def __init__(self, app: ASGIApp, generation: Generation) -> None:
        self.app = app
        self.generation = generation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return

        async def send_then_invalidate(message: Message) -> None:
            if message["type"] == "http.response.start":  # the change is committed; the client not told yet
                self.generation.invalidate()
            await send(message)

        await self.app(scope, receive, send_then_invalidate)


def bootstrap(settings: Settings) -> TokenCreated | None:
    """Before the server's first start: the schema, and the first admin with a token for every project
    (returned once; ``None`` when there are users already)."""
    wl = Wanlora.from_settings(settings)
    try:
        wl.db.ensure_schema()
        with wl.accounts() as accounts:
            return accounts.bootstrap_admin()
    finally:
        wl.close()


def create_app(
    settings: Settings | None = None,
    *,
    wl: Wanlora | None = None,
    deliver_webhooks: bool = True,
    local_sign_in: LocalSignIn | None = None,
) -> FastAPI:
    settings = settings or Settings()
    wl = wl or Wanlora.from_settings(settings)
    wl.db.ensure_schema()
    uploads = settings.home_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    sweep_uploads(uploads)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Webhook deliveries leave from a background thread: the request that made a change has
        # already answered by the time a receiver is called, whatever the receiver does.
        # Everything built so far lives as long as the process: keep it out of the cyclic collector's
        # scans, whose full passes over a heap this size otherwise stall requests for ~100 ms.
        gc.collect()
        gc.freeze()
        generation = app.state.wanlora.generation
        generation.watch()  # the event log's head, pushed to the caches and the change feed
        stop = threading.Event()
        thread = dispatcher = None
        if deliver_webhooks:
            # Deliveries are queued in the transaction of an event: the dispatcher sleeps until the event
            # log moves (the watcher above) or a retry falls due, instead of querying in a loop.
            dispatcher = Dispatcher(wl.db, egress=wl.egress)
            generation.on_change(dispatcher.nudge)
            thread = threading.Thread(
                target=dispatcher.run_forever, args=(stop,), kwargs={"longest_wait": DISPATCH_SAFETY_NET}, daemon=True
            )
            thread.start()
        yield
        stop.set()
        if dispatcher is not None:
            dispatcher.nudge()
        generation.close()
        if thread is not None:
            thread.join(10)

    app = FastAPI(
        title="wanlora", version="0.1.0", description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None
    )

    def newest_event() -> int:
        with wl.registry(write=False) as reg:
            return reg.last_event_id()

    app.state.wanlora = ServerState(
        wl=wl,
        settings=settings,
        uploads=uploads,
        max_upload_bytes=settings.max_upload_bytes,
        auth=AuthCache(settings.auth_cache_seconds),
        sign_ins=SignInLimiter(settings.failed_sign_ins_per_address, settings.failed_sign_ins_per_prefix),
        generation=Generation(
            newest_event,
            settings.change_check_seconds,
            signal=lambda: wl.db.change_signal(settings.change_check_seconds),
        ),
        local_sign_in=local_sign_in,
    )
    errors.install(app)

    app.add_middleware(FreshAfterWrites, generation=app.state.wanlora.generation)
    if local_sign_in is not None:  # `wanlora dashboard`: loopback names only, so no rebound DNS name reaches it
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])
    app.add_middleware(BodyLimit)

    app.include_router(loras.every_project)
    for module in (loras, files, accounts, feed, webhooks, evaluation):
        app.include_router(module.router)

    web.install(app)  # the dashboard at /, and /docs and /redoc served offline

    @app.get("/api/v1/health", tags=["meta"], summary="Liveness")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
