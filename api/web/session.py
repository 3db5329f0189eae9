"""Signing a browser in and out, and the caller of every dashboard request.

Sign-in takes an API token once (POSTed, never in a URL) and answers with a session cookie: HttpOnly,
SameSite=Strict, Secure over HTTPS, expiring with the session (at most ``dashboard_session_hours``, never
after the token). Every state-changing form carries the session's CSRF token, compared in constant time,
and its Origin, when the browser sends one, must be this server. The sign-in form itself is protected by
a double-submit cookie, so another site cannot sign a visitor in under its own token.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from api.deps import ServerState, StateDep, client_address
from api.web.render import page
from registry.backends.local import Wanlora
from registry.domain.access import Action, Principal
from registry.domain.clock import utcnow
from registry.domain.errors import InvalidInput, PermissionDenied, Unauthenticated, WanloraError
from registry.services.access import default_authorizer
from registry.services.sessions import WebCaller

__all__ = ["COOKIE", "Web", "WebDep", "router", "safe_next"]

COOKIE = "wanlora_session"
SIGN_IN_COOKIE = "wanlora_signin"
router = APIRouter(include_in_schema=False)


class SignInRequired(Exception):
    """Raised by the caller dependency: the page answers with a redirect to the sign-in form."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


@dataclass
class Web:
    """A signed-in dashboard request: the registry as the session's principal, and its CSRF token."""

    request: Request
    state: ServerState
    wl: Wanlora
    principal: Principal
    csrf: str

    def can(self, project: str, action: Action) -> bool:
        return default_authorizer().allowed(self.principal, project, action)

    def check_csrf(self, token: str | None) -> None:
        """Every state-changing form: its CSRF field and, when the browser names one, its origin."""
        check_origin(self.request)
        if not token or not hmac.compare_digest(token.encode(), self.csrf.encode()):
            raise PermissionDenied(
                "the form's CSRF token is missing or does not match this session",
                hint="reload the page and submit the form again",
            )


def check_origin(request: Request) -> None:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return  # no Origin (an old browser, curl): the CSRF token alone decides
    here = urlsplit(str(request.base_url))
    there = urlsplit(origin)
    if (there.scheme, there.netloc) != (here.scheme, here.netloc):
        raise PermissionDenied("this form was sent from another site", hint="use the dashboard's own pages")


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a path on this server only (no open redirect)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path or len(path) > 2000:
        return "/"
    return path


def _resolve(state: ServerState, secret: str | None) -> WebCaller | None:
    try:
        with state.wl.sessions(write=False) as sessions:
            return sessions.resolve(secret, allow_local=state.local_sign_in is not None)
    except Unauthenticated:
        return None


async def get_web(request: Request, state: StateDep) -> Web:
    secret = request.cookies.get(COOKIE)
    caller = await run_in_threadpool(_resolve, state, secret) if secret else None
    if caller is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target if request.method == "GET" else "/")
    web = Web(request, state, state.wl.as_principal(caller.principal), caller.principal, caller.csrf)
    request.state.viewer = web  # an error page for this request still shows who is signed in
    return web


WebDep = Annotated[Web, Depends(get_web)]


def sign_in_redirect(exc: SignInRequired) -> Response:
    return RedirectResponse("/signin?next=" + quote(exc.next_path, safe="/"), status_code=303)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _signed_in(request: Request, secret: str, expires_in: float, to: str) -> Response:
    response = RedirectResponse(safe_next(to), status_code=303)
    response.set_cookie(
        COOKIE, secret, max_age=max(1, int(expires_in)), httponly=True, samesite="strict", secure=_secure(request),
        path="/",
    )  # fmt: skip
    response.delete_cookie(SIGN_IN_COOKIE, path="/signin")
    return response


@router.get("/signin")
def sign_in_form(request: Request, next: str = "/") -> Response:
    nonce = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(24)
    local = getattr(request.app.state.wanlora, "local_sign_in", None) is not None
    return _form(request, nonce, {"next": safe_next(next), "error": None, "local": local})


def _form(request: Request, nonce: str, context: dict[str, Any], status: int = 200) -> Response:
    """The sign-in form, with its nonce in the form and in the double-submit cookie."""
    response = page(request, "signin.html", {**context, "nonce": nonce}, web=None, status=status)
    response.set_cookie(
        SIGN_IN_COOKIE, nonce, max_age=1800, httponly=True, samesite="strict", secure=_secure(request), path="/signin"
    )
    return response


def _open(state: ServerState, token: str, address: str) -> tuple[str, float]:
    state.sign_ins.check(address, token)
    lifetime = timedelta(hours=state.settings.dashboard_session_hours)
    try:
        with state.wl.sessions() as sessions:
            opened = sessions.open(token, lifetime=lifetime)
    except Unauthenticated:
        state.sign_ins.failed(address, token)
        raise
    return opened.secret, (opened.caller.expires_at - utcnow()).total_seconds()


def _check_nonce(request: Request, nonce: str) -> None:
    check_origin(request)
    cookie = request.cookies.get(SIGN_IN_COOKIE) or ""
    if not nonce or not hmac.compare_digest(nonce.encode(), cookie.encode()):
        raise InvalidInput("the sign-in form expired", hint="reload the sign-in page and try again")


@router.post("/signin")
async def sign_in(
    request: Request, state: StateDep, token: Annotated[str, Form(max_length=256)] = "",
    nonce: Annotated[str, Form(max_length=64)] = "", next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:  # fmt: skip
    try:
        _check_nonce(request, nonce)
        secret, expires_in = await run_in_threadpool(_open, state, token.strip(), client_address(request))
    except WanloraError as exc:
        return _form_again(request, exc, next)
    return _signed_in(request, secret, expires_in, next)


def _form_again(request: Request, exc: WanloraError, next: str) -> Response:
    """The sign-in form with what went wrong, under a fresh nonce (never one the request brought)."""
    context = {"next": safe_next(next), "error": exc.message, "hint": exc.hint, "local": False}
    return _form(request, secrets.token_urlsafe(24), context, 401 if isinstance(exc, Unauthenticated) else 400)


def _open_local(state: ServerState, code: str) -> tuple[str, float]:
    local = state.local_sign_in
    if local is None or not local.redeem(code):
        raise Unauthenticated("this sign-in link was used already or has expired", hint="run `wanlora dashboard` again")
    lifetime = timedelta(hours=state.settings.dashboard_session_hours)
    with state.wl.sessions() as sessions:
        opened = sessions.open_local(local.user, lifetime=lifetime)
    return opened.secret, lifetime.total_seconds()


@router.post("/signin/local")
async def sign_in_local(
    request: Request, state: StateDep, code: Annotated[str, Form(max_length=128)] = "",
    nonce: Annotated[str, Form(max_length=64)] = "",
) -> Response:  # fmt: skip
    """`wanlora dashboard`'s one-time code (carried in the URL's fragment, which no server or log sees)."""
    try:
        _check_nonce(request, nonce)
        secret, expires_in = await run_in_threadpool(_open_local, state, code)
    except WanloraError as exc:
        return _form_again(request, exc, "/")
    return _signed_in(request, secret, expires_in, "/")


def _close(state: ServerState, secret: str | None) -> None:
    with state.wl.sessions() as sessions:
        sessions.close(secret)


@router.post("/signout")
async def sign_out(web: WebDep, csrf: Annotated[str, Form(max_length=64)] = "") -> Response:
    web.check_csrf(csrf)
    await run_in_threadpool(_close, web.state, web.request.cookies.get(COOKIE))
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
