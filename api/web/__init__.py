"""The web dashboard: server-rendered pages over the same services and casbin rules as the API.

``session`` signs browsers in (token → HttpOnly cookie) and checks CSRF; ``render`` draws templates with
the security headers every page carries; ``charts`` draws SVG charts from the data on the server;
``pages`` reads, ``actions`` changes state (every form POSTs with its session's CSRF token), ``admin``
manages users, tokens and webhooks; ``docs`` serves Swagger UI and ReDoc from packaged files.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

__all__ = ["install"]

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    from api.web import actions, admin, docs, pages, session

    docs.install(app)  # first: its assets live under /static/docs
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (session, pages, actions, admin):
        app.include_router(module.router)
