"""The dashboard's lifecycle actions: promote (the gate's verdict shown first; on refusal an admin may
override with a reason), roll back, deprecate, start and stop a trial. Every one is a POSTed form with the
session's CSRF token, checked by the same services and casbin rules as the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.web.render import page
from api.web.session import WebDep
from registry.domain.access import Action
from registry.domain.errors import GateRefused, InvalidInput, WanloraError

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
LORA = "/loras/{project}/{name}"
Csrf = Annotated[str, Form(max_length=64)]
Reason = Annotated[str, Form(max_length=2000)]


def _promote_page(web: WebDep, request: Request, project: str, name: str, version: str,
                  error: WanloraError | None = None, reason: str = "") -> HTMLResponse:  # fmt: skip
    with web.wl.registry(write=False) as reg:
        found = reg.get_version(project=project, name=name, version=version)
        lora = reg.get_lora(project=project, name=name)
    with web.wl.evaluation(write=False) as ev:
        gate = ev.gate(project=project, name=name, version=version)
    status = 409 if isinstance(error, GateRefused) else 400 if error else 200
    return page(request, "promote.html", {
        "v": found, "lora": lora, "project": project, "gate": gate, "error": error, "reason": reason,
        "can_promote": web.can(project, Action.VERSION_PROMOTE),
    }, web=web, status=status)  # fmt: skip


@router.get(LORA + "/v/{version}/promote")
def promote_form(web: WebDep, request: Request, project: str, name: str, version: str) -> HTMLResponse:
    """The gate's verdict for this version's files, then the promote (or override) form."""
    return _promote_page(web, request, project, name, version)


@router.post(LORA + "/v/{version}/promote")
def promote(
    web: WebDep, request: Request, project: str, name: str, version: str, csrf: Csrf = "", reason: Reason = "",
    override: Annotated[bool, Form()] = False,
) -> Response:  # fmt: skip
    web.check_csrf(csrf)
    reason = reason.strip()
    try:
        if override and not reason:
            raise InvalidInput("an override needs a reason", hint="say why this version goes out without the evidence")
        with web.wl.registry() as reg:
            reg.promote(project=project, name=name, version=version, reason=reason or None, override=override)
    except (GateRefused, InvalidInput) as exc:
        return _promote_page(web, request, project, name, version, error=exc, reason=reason)
    return RedirectResponse(f"/loras/{project}/{name}?done=promoted+{version}", status_code=303)


@router.post(LORA + "/rollback")
def rollback(web: WebDep, project: str, name: str, csrf: Csrf = "", reason: Reason = "") -> Response:
    web.check_csrf(csrf)
    with web.wl.registry() as reg:
        back = reg.rollback(project=project, name=name, reason=reason.strip() or None)
    return RedirectResponse(f"/loras/{project}/{name}?done=rolled+back+to+{back.version}", status_code=303)


@router.post(LORA + "/v/{version}/deprecate")
def deprecate(web: WebDep, project: str, name: str, version: str, csrf: Csrf = "", reason: Reason = "") -> Response:
    web.check_csrf(csrf)
    with web.wl.registry() as reg:
        reg.deprecate(project=project, name=name, version=version, reason=reason.strip() or None)
    return RedirectResponse(f"/loras/{project}/{name}?done=deprecated+{version}", status_code=303)


@router.post(LORA + "/trial/start")
def start_trial(
    web: WebDep, project: str, name: str, version: Annotated[str, Form(max_length=64)], csrf: Csrf = "",
    share: Annotated[float | None, Form(ge=1, le=50)] = None, reason: Reason = "",
) -> Response:  # fmt: skip
    web.check_csrf(csrf)
    with web.wl.evaluation() as ev:
        ev.start_trial(project=project, name=name, version=version, share=share, reason=reason.strip() or None)
    return RedirectResponse(f"/loras/{project}/{name}/trial", status_code=303)


@router.post(LORA + "/trial/stop")
def stop_trial(web: WebDep, project: str, name: str, csrf: Csrf = "", reason: Reason = "") -> Response:
    web.check_csrf(csrf)
    with web.wl.evaluation() as ev:
        ev.stop_trial(project=project, name=name, reason=reason.strip() or None)
    return RedirectResponse(f"/loras/{project}/{name}/trial", status_code=303)
