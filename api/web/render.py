"""Templates in, HTML responses out, each with the headers that keep the dashboard to itself.

The Content-Security-Policy allows scripts, styles, images and requests from this server only (and
``data:`` images), no framing, and forms that post here alone; autoescaping is on for every template.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from api.web import charts
from registry.domain.access import Principal

__all__ = ["HEADERS", "Viewer", "error_page", "page"]


class Viewer(Protocol):
    """Who a page is drawn for (``api.web.session.Web``): the header names them, forms carry the token."""

    principal: Principal
    csrf: str


HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def _score(value: Any) -> str:
    """Counts as they are, measurements to two decimals."""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _num(value: Any) -> Any:
    """A setting as a person reads it: 0.0003, not 0.00030000000000000003."""
    return f"{value:.6g}" if isinstance(value, float) else value


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _plain(value: Any) -> Any:
    """What ``{{ value }}`` prints: an enum's value (``current``), not its name (``Status.CURRENT``)."""
    return value.value if isinstance(value, Enum) else value


ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    finalize=_plain,
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(when=_when, score=_score, pretty=_pretty, num=_num, plain=_plain)
ENV.globals.update(
    line_chart=lambda *a, **k: Markup(charts.line_chart(*a, **k)),
    bar_chart=lambda *a, **k: Markup(charts.bar_chart(*a, **k)),
)


_DONE = re.compile(r"(promoted|rolled back to|deprecated) [0-9A-Za-z.+-]{1,64}")


def _done(text: str | None) -> str | None:
    """The confirmation after an action's redirect; only the shapes the actions write (a link cannot
    make the page say something else)."""
    return text if text and _DONE.fullmatch(text) else None


def page(
    request: Request, template: str, context: dict[str, Any], *, web: Viewer | None, status: int = 200
) -> HTMLResponse:
    user = None
    if web is not None:
        user = {"name": web.principal.user, "role": web.principal.role, "project": web.principal.project,
                "admin": web.principal.role == "admin"}  # fmt: skip
    html = ENV.get_template(template).render(
        request=request, user=user, csrf=web.csrf if web else "", path=request.url.path,
        done=_done(request.query_params.get("done")), **context,
    )  # fmt: skip
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def error_page(request: Request, status: int, code: str, message: str, hint: str | None) -> HTMLResponse:
    viewer = getattr(request.state, "viewer", None)
    return page(request, "error.html", {"status": status, "code": code, "message": message, "hint": hint}, web=viewer,
                status=status)  # fmt: skip
