"""Every route of /openapi.json × every kind of caller (issue 11, security suite).

The table must name every operation the API publishes: a new route fails here until someone decides
who may call it. Outsiders (no token, a bad, an expired or a revoked one) get 401 everywhere but the
health check; a project admin of another project (``stranger``) gets 403 or 404 on this project's
routes and filtered answers on the project-less ones. No answer is a 5xx, and every refusal is the
documented error shape, with nothing of the data in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.api.conftest import Api
from tests.conftest import BACKENDS

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)

OUTSIDERS = ("none", "bad", "expired", "revoked")
INSIDERS = ("trainer", "production", "admin", "stranger")
P = "/api/v1/projects/p1"
L = f"{P}/loras/sarah"
V = f"{L}/versions"
RAW = object()  # the body is a file upload


def _webhook(api: Api) -> None:
    with api.wl.webhooks() as hooks:
        hooks.add(url="http://127.0.0.1:9/h", project="p1", events=["promote"])


def _current_sha(api: Api) -> str:
    with api.wl.registry(write=False) as reg:
        return reg.get_version(project="p1", name="sarah", version="1.1.0").files[0].sha256


# (method, OpenAPI path) -> (concrete path, body, (trainer, production, admin, stranger), setup)
Row = tuple[str | Callable[[Api], str], Any, tuple[int, int, int, int], Callable[[Api], None] | None]
ROUTES: dict[tuple[str, str], Row] = {
    ("GET", "/api/v1/health"): ("/api/v1/health", None, (200, 200, 200, 200), None),
    ("GET", "/api/v1/loras"): ("/api/v1/loras", None, (200, 200, 200, 200), None),
    ("GET", "/api/v1/projects/{project}/loras"): (f"{P}/loras", None, (200, 200, 200, 403), None),
    ("POST", "/api/v1/projects/{project}/loras"): (
        f"{P}/loras", {"name": "n-{caller}", "category": "style", "base_model": "wan2.2-ti2v-5b"},
        (201, 403, 201, 403), None,
    ),
    ("GET", "/api/v1/projects/{project}/loras/{name}"): (L, None, (200, 200, 200, 403), None),
    ("GET", "/api/v1/projects/{project}/loras/{name}/versions/{version}"): (
        f"{V}/1.1.0", None, (200, 200, 200, 403), None,
    ),
    ("GET", "/api/v1/projects/{project}/loras/{name}/versions/{version}/preview.png"): (
        f"{V}/1.1.0/preview.png", None, (404, 404, 404, 403), None,
    ),
    ("POST", "/api/v1/projects/{project}/loras/{name}/versions"): (
        V, {"bump": "patch", "changelog": "x", "file": "u_" + "a" * 32}, (404, 403, 404, 403), None,
    ),
    ("POST", "/api/v1/projects/{project}/loras/{name}/versions/{version}/promote"): (
        f"{V}/1.2.0/promote", {"reason": "x"}, (403, 403, 200, 403), None,
    ),
    ("POST", "/api/v1/projects/{project}/loras/{name}/rollback"): (
        f"{L}/rollback", {"reason": "x"}, (403, 403, 200, 403), None,
    ),
    ("POST", "/api/v1/projects/{project}/loras/{name}/versions/{version}/deprecate"): (
        f"{V}/1.2.0/deprecate", {"reason": "x"}, (403, 403, 200, 403), None,
    ),
    ("POST", "/api/v1/projects/{project}/loras/{name}/versions/{version}/annotations"): (
        f"{V}/1.2.0/annotations", {"scores": {"c": 9}}, (200, 403, 200, 403), None,
    ),
    ("GET", "/api/v1/projects/{project}/loras/{name}/history"): (f"{L}/history", None, (200, 403, 200, 403), None),
    ("GET", "/api/v1/projects/{project}/history"): (f"{P}/history", None, (200, 403, 200, 403), None),
    ("GET", "/api/v1/projects/{project}/loras/{name}/diff"): (
        f"{L}/diff?old=1.1.0&new=1.2.0", None, (200, 404, 200, 403), None,
    ),
    ("GET", "/api/v1/projects/{project}/loras/{name}/notes"): (f"{L}/notes", None, (200, 200, 200, 403), None),
    ("POST", "/api/v1/uploads"): ("/api/v1/uploads?project=p1", RAW, (201, 403, 201, 403), None),
    ("GET", "/api/v1/artifacts/{sha256}"): (
        lambda api: f"/api/v1/artifacts/{_current_sha(api)}", None, (200, 200, 200, 404), None,
    ),
    ("GET", "/api/v1/projects/{project}/resolve"): (f"{P}/resolve", None, (200, 200, 200, 403), None),
    ("GET", "/api/v1/resolve"): ("/api/v1/resolve", None, (200, 200, 200, 200), None),
    ("GET", "/api/v1/users"): ("/api/v1/users", None, (403, 403, 403, 403), None),
    ("DELETE", "/api/v1/users/{name}"): ("/api/v1/users/stranger", None, (403, 403, 403, 403), None),
    ("GET", "/api/v1/which"): (f"/api/v1/which?payload_sha256={'0' * 64}", None, (200, 200, 200, 200), None),
    ("POST", "/api/v1/users"): ("/api/v1/users", {"name": "zed-{caller}"}, (403, 403, 403, 403), None),
    ("GET", "/api/v1/tokens"): ("/api/v1/tokens", None, (200, 200, 200, 200), None),
    ("POST", "/api/v1/tokens"): (
        "/api/v1/tokens", {"user": "trainer", "project": "p1", "role": "production"}, (403, 403, 201, 403), None,
    ),
    ("DELETE", "/api/v1/tokens/{token_id}"): ("/api/v1/tokens/1", None, (403, 403, 403, 403), None),
    ("GET", "/api/v1/changes"): ("/api/v1/changes?wait=0", None, (200, 200, 200, 200), None),
    ("GET", "/api/v1/webhooks"): ("/api/v1/webhooks", None, (200, 200, 200, 200), None),
    ("POST", "/api/v1/webhooks"): (
        "/api/v1/webhooks", {"url": "http://127.0.0.1:9/h", "project": "p1", "events": ["promote"]},
        (403, 403, 201, 403), None,
    ),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): ("/api/v1/webhooks/1", None, (404, 404, 200, 404), _webhook),
    ("POST", "/api/v1/webhooks/{webhook_id}/test"): ("/api/v1/webhooks/1/test", None, (404, 404, 200, 404), _webhook),
    ("GET", "/api/v1/webhooks/deliveries"): ("/api/v1/webhooks/deliveries", None, (200, 200, 200, 200), None),
    ("GET", "/api/v1/projects/{project}/loras/{name}/versions/{version}/evaluations"): (
        f"{V}/1.2.0/evaluations", None, (200, 404, 200, 403), None,
    ),
    ("POST", "/api/v1/projects/{project}/loras/{name}/versions/{version}/evaluations"): (
        f"{V}/1.2.0/evaluations", {"phase": "technical", "digest": "0" * 64, "passed": True, "summary": "x"},
        (409, 403, 409, 403), None,
    ),
    ("GET", "/api/v1/projects/{project}/loras/{name}/versions/{version}/gate"): (
        f"{V}/1.2.0/gate", None, (200, 404, 200, 403), None,
    ),
    ("GET", "/api/v1/projects/{project}/loras/{name}/versions/{version}/digest"): (
        f"{V}/1.2.0/digest", None, (200, 404, 200, 403), None,
    ),
    ("POST", "/api/v1/projects/{project}/loras/{name}/trial"): (
        f"{L}/trial", {"version": "1.2.0"}, (403, 403, 200, 403), None,
    ),
    ("GET", "/api/v1/projects/{project}/loras/{name}/trial"): (f"{L}/trial", None, (404, 403, 404, 403), None),
    ("POST", "/api/v1/projects/{project}/loras/{name}/trial/stop"): (
        f"{L}/trial/stop", {"reason": "x"}, (403, 403, 404, 403), None,
    ),
    ("GET", "/api/v1/projects/{project}/loras/{name}/pick"): (f"{L}/pick?key=job-1", None, (200, 200, 200, 403), None),
    ("POST", "/api/v1/projects/{project}/loras/{name}/versions/{version}/reports"): (
        f"{V}/1.1.0/reports", {"job_id": "j-{caller}", "success": True}, (403, 200, 200, 403), None,
    ),
    ("GET", "/api/v1/projects/{project}/loras/{name}/metrics"): (f"{L}/metrics", None, (200, 200, 200, 403), None),
    ("GET", "/api/v1/review"): ("/api/v1/review", None, (200, 200, 200, 200), None),
    ("GET", "/api/v1/projects/{project}/policy"): (f"{P}/policy", None, (200, 200, 200, 403), None),
}  # fmt: skip


def test_the_table_names_every_published_route(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    published = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert published == set(ROUTES), (
        f"not in the table: {sorted(published - set(ROUTES))}; gone: {sorted(set(ROUTES) - published)}"
    )


def _call(api: Api, caller: str, method: str, path: str, body: Any) -> Any:
    if body is RAW:
        return api.call(caller, method, path, content=b"lora bytes")
    payload = {k: v.format(caller=caller) if isinstance(v, str) else v for k, v in body.items()} if body else None
    return api.call(caller, method, path, json=payload)


@pytest.mark.parametrize("route", list(ROUTES), ids=[f"{m} {p.removeprefix('/api/v1')}" for m, p in ROUTES])
def test_each_caller_gets_what_its_role_allows(api: Api, route: tuple[str, str]) -> None:
    method, _ = route
    where, body, expected, setup = ROUTES[route]
    if setup is not None:
        setup(api)
    path = where(api) if callable(where) else where
    public = path == "/api/v1/health"
    for caller in OUTSIDERS:
        response = _call(api, caller, method, path, body)
        assert response.status_code == (200 if public else 401), (caller, method, path, response.text)
        if not public:
            assert set(response.json()) == {"error"} and "sarah" not in response.text
    for caller, want in zip(INSIDERS, expected, strict=True):
        response = _call(api, caller, method, path, body)
        assert response.status_code == want, (caller, method, path, response.text)
        if want >= 400:
            assert set(response.json()) == {"error"} and response.json()["error"]["code"]
        if caller == "stranger" and want == 200 and method == "GET":
            assert "sarah" not in response.text, (path, response.text)  # filtered to its own project
