"""The application factory: settings in, a wired FastAPI app out. Nothing connects at import time."""

from __future__ import annotations

from fastapi import FastAPI

from api import errors
from api.deps import ServerState
from api.routes import accounts, feed, files, loras
from registry.app import Wanlora
from registry.settings import Settings

DESCRIPTION = """Versioned registry and deployment manager for WAN 2.2 LoRA adapters.

Authenticate with `Authorization: Bearer <token>` (tokens from `wanlora token create`). Every error is
`{"error": {"code", "message", "hint"}}`; 401 means no, a bad, an expired or a revoked token, 403 a
role that does not allow the call, 404 also what this role may not see.
"""


def create_app(settings: Settings | None = None, *, wl: Wanlora | None = None) -> FastAPI:
    settings = settings or Settings()
    wl = wl or Wanlora.from_settings(settings)
    wl.db.ensure_schema()
    uploads = settings.home_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    app = FastAPI(title="wanlora", version="0.1.0", description=DESCRIPTION)
    app.state.wanlora = ServerState(
        wl=wl, settings=settings, uploads=uploads, max_upload_bytes=settings.max_upload_bytes
    )
    errors.install(app)
    app.include_router(loras.every_project)
    for module in (loras, files, accounts, feed):
        app.include_router(module.router)

    @app.get("/api/v1/health", tags=["meta"], summary="Liveness")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
