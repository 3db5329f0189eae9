"""Administration on the dashboard: users, tokens (a new token is shown once, on a page no cache keeps)
and webhooks with their deliveries. Each page and form asks the same services as the API, so a role
that may not manage something gets a 403 page here too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.deps import IdPath
from api.web.render import page
from api.web.session import WebDep
from registry.domain.access import ALL_PROJECTS, ROLES, Action
from registry.domain.accounts import parse_duration
from registry.domain.errors import PermissionDenied, WanloraError
from registry.domain.webhooks import EVENT_KINDS

__all__ = ["router"]

router = APIRouter(prefix="/admin", include_in_schema=False)
Csrf = Annotated[str, Form(max_length=64)]
Name = Annotated[str, Form(max_length=64)]


def _require_admin(web: WebDep) -> None:
    if web.principal.role != "admin":
        raise PermissionDenied(f"{web.principal.describe()} may not administer the registry", hint="ask an admin")


def _admin_page(web: WebDep, request: Request, *, created: object = None, error: WanloraError | None = None,
                status: int = 200) -> HTMLResponse:  # fmt: skip
    _require_admin(web)
    users = None
    if web.can(ALL_PROJECTS, Action.USER_MANAGE):
        with web.wl.accounts(write=False) as accounts:
            users = accounts.list_users(removed=True)
    with web.wl.accounts(write=False) as accounts:
        tokens = accounts.list_tokens()
    with web.wl.webhooks(write=False) as hooks:
        webhooks = hooks.list_webhooks()
        deliveries = hooks.deliveries(limit=50)
    return page(request, "admin.html", {
        "users": users, "tokens": tokens, "webhooks": webhooks, "deliveries": deliveries, "created": created,
        "error": error, "roles": ROLES, "kinds": sorted(EVENT_KINDS),
        "default_project": web.principal.project,
    }, web=web, status=status)  # fmt: skip


@router.get("")
def admin(web: WebDep, request: Request) -> HTMLResponse:
    return _admin_page(web, request)


def _attempt(web: WebDep, request: Request, action: Callable[[], object]) -> Response:
    """Run a form's change; a refusal is shown on the admin page with what to do, never lost. What the
    change returns (a new token, a webhook's secret, a ping's result) is shown once."""
    try:
        created = action()
    except WanloraError as exc:
        if isinstance(exc, PermissionDenied):
            raise
        return _admin_page(web, request, error=exc, status=400)
    if created is not None:
        return _admin_page(web, request, created=created)
    return RedirectResponse("/admin", status_code=303)


@router.post("/users")
def add_user(web: WebDep, request: Request, name: Name, csrf: Csrf = "") -> Response:
    web.check_csrf(csrf)

    def run() -> None:
        with web.wl.accounts() as accounts:
            accounts.add_user(name=name.strip())

    return _attempt(web, request, run)


@router.post("/users/{user}/remove")
def remove_user(web: WebDep, request: Request, user: str, csrf: Csrf = "") -> Response:
    web.check_csrf(csrf)

    def run() -> None:
        with web.wl.accounts() as accounts:
            accounts.remove_user(name=user)
        web.state.auth.clear()

    return _attempt(web, request, run)


@router.post("/tokens")
def create_token(
    web: WebDep, request: Request, user: Name, project: Name, role: Annotated[str, Form(max_length=16)],
    csrf: Csrf = "", expires: Annotated[str, Form(max_length=16)] = "",
) -> Response:  # fmt: skip
    web.check_csrf(csrf)

    def run() -> object:
        lifetime = parse_duration(expires) if expires.strip() else None
        with web.wl.accounts() as accounts:
            return accounts.create_token(user=user.strip(), project=project.strip(), role=role, expires_in=lifetime)

    return _attempt(web, request, run)


@router.post("/tokens/{token_id}/revoke")
def revoke_token(web: WebDep, request: Request, token_id: IdPath, csrf: Csrf = "") -> Response:
    web.check_csrf(csrf)

    def run() -> None:
        with web.wl.accounts() as accounts:
            accounts.revoke_token(token_id=token_id)
        web.state.auth.clear()

    return _attempt(web, request, run)


@router.post("/webhooks")
def add_webhook(
    web: WebDep, request: Request, url: Annotated[str, Form(max_length=2048)], project: Name,
    events: Annotated[list[str] | None, Form()] = None, csrf: Csrf = "",
) -> Response:  # fmt: skip
    web.check_csrf(csrf)

    def run() -> object:
        with web.wl.webhooks() as hooks:
            return hooks.add(url=url.strip(), project=project.strip(), events=list(events or [])[:32])

    return _attempt(web, request, run)


@router.post("/webhooks/{webhook_id}/remove")
def remove_webhook(web: WebDep, request: Request, webhook_id: IdPath, csrf: Csrf = "") -> Response:
    web.check_csrf(csrf)

    def run() -> None:
        with web.wl.webhooks() as hooks:
            hooks.remove(webhook_id=webhook_id)

    return _attempt(web, request, run)


@router.post("/webhooks/{webhook_id}/test")
def test_webhook(web: WebDep, request: Request, webhook_id: IdPath, csrf: Csrf = "") -> Response:
    web.check_csrf(csrf)

    def run() -> object:
        with web.wl.webhooks() as hooks:
            return hooks.test(webhook_id=webhook_id)

    return _attempt(web, request, run)
