"""The HTTP API: a role × endpoint matrix, uploads, downloads, resolve, the change feed, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import Api
from tests.conftest import BACKENDS
from tests.helpers import make

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)

CALLERS = ("trainer", "production", "admin", "stranger", "none", "bad", "expired", "revoked")
DENIED = {"none": 401, "bad": 401, "expired": 401, "revoked": 401, "stranger": 403}

P = "/api/v1/projects/p1"
RAW = {"__raw__": True}  # the body is a file upload, not JSON
# (method, path, json body, expected status for trainer, production, admin); outsiders per DENIED.
# Each row starts from the same state (a fresh database); "{caller}" in a body keeps callers apart.
MATRIX: list[tuple[str, str, Any, tuple[int, int, int]]] = [
    ("GET", f"{P}/loras", None, (200, 200, 200)),
    (
        "POST",
        f"{P}/loras",
        {"name": "n-{caller}", "category": "style", "base_model": "wan2.2-ti2v-5b"},
        (201, 403, 201),
    ),
    ("GET", f"{P}/loras/sarah", None, (200, 200, 200)),
    ("GET", f"{P}/loras/sarah/versions/1.1.0", None, (200, 200, 200)),
    ("GET", f"{P}/loras/sarah/versions/1.2.0", None, (200, 404, 200)),
    ("GET", f"{P}/loras/sarah/versions/1.0.0", None, (404, 404, 200)),
    ("POST", f"{P}/loras/sarah/versions/1.2.0/annotations", {"scores": {"c": 9}}, (200, 403, 200)),
    ("GET", f"{P}/loras/sarah/history", None, (200, 403, 200)),
    ("GET", f"{P}/history", None, (200, 403, 200)),
    ("GET", f"{P}/loras/sarah/diff?old=1.1.0&new=1.2.0", None, (200, 404, 200)),
    ("GET", f"{P}/loras/sarah/notes", None, (200, 200, 200)),
    ("GET", f"{P}/resolve", None, (200, 200, 200)),
    ("GET", "/api/v1/resolve", None, (200, 200, 200)),
    ("GET", "/api/v1/changes?wait=0", None, (200, 200, 200)),
    ("GET", "/api/v1/tokens", None, (200, 200, 200)),
    ("POST", "/api/v1/tokens", {"user": "trainer", "project": "p1", "role": "production"}, (403, 403, 201)),
    ("GET", "/api/v1/users", None, (403, 403, 403)),
    ("POST", "/api/v1/users", {"name": "zed"}, (403, 403, 403)),
    ("POST", "/api/v1/uploads?project=p1", RAW, (201, 403, 201)),
    ("GET", "/api/v1/webhooks", None, (200, 200, 200)),
    (
        "POST",
        "/api/v1/webhooks",
        {"url": "http://127.0.0.1:9/h", "project": "p1", "events": ["promote"]},
        (403, 403, 201),
    ),
    ("GET", "/api/v1/webhooks/deliveries", None, (200, 200, 200)),
    ("DELETE", "/api/v1/tokens/1", None, (403, 403, 403)),  # the first admin's token for every project
    ("POST", f"{P}/loras/sarah/versions/1.2.0/deprecate", {"reason": "x"}, (403, 403, 200)),
    ("POST", f"{P}/loras/sarah/versions/1.2.0/promote", {"reason": "x"}, (403, 403, 200)),
    ("POST", f"{P}/loras/sarah/rollback", {"reason": "x"}, (403, 403, 200)),
]


@pytest.mark.parametrize("row", range(len(MATRIX)), ids=[f"{m} {p.split('p1')[-1]}" for m, p, _, _ in MATRIX])
def test_role_matrix(api: Api, row: int) -> None:
    method, path, body, expected = MATRIX[row]
    for caller in CALLERS:
        want = dict(zip(("trainer", "production", "admin"), expected, strict=True)).get(caller, DENIED.get(caller))
        if caller == "stranger" and path.startswith("/api/v1/") and not path.startswith(P):
            continue  # project-less endpoints: what a stranger sees is filtered, tested below
        if body is RAW:
            response = api.call(caller, method, path, content=b"lora bytes")
        else:
            payload = (
                {k: v.format(caller=caller) if isinstance(v, str) else v for k, v in body.items()} if body else None
            )
            response = api.call(caller, method, path, json=payload)
        assert response.status_code == want, (caller, method, path, response.text)
        if want >= 400:
            error = response.json()["error"]
            assert error["code"] and error["message"] and "sarah" not in str(error.get("data", ""))


def test_production_sees_and_pulls_only_current(api: Api) -> None:
    lora = api.call("production", "GET", f"{P}/loras/sarah").json()
    assert [v["version"] for v in lora["versions"]] == ["1.1.0"]
    resolved = api.call("production", "GET", f"{P}/resolve").json()
    [target] = resolved
    assert target["version"] == "1.1.0"
    url = target["files"][0]["download_url"].replace("http://testserver", "")
    body = api.call("production", "GET", url)
    assert body.status_code == 200
    assert hashlib.sha256(body.content).hexdigest() == target["files"][0]["sha256"]
    assert body.headers["etag"] == f'"{target["files"][0]["sha256"]}"'
    # the bytes behind a digest never change: kept by the client without asking again, never by a shared cache
    assert body.headers["cache-control"] == "private, max-age=31536000, immutable"
    unchanged = api.call("production", "GET", url, headers={"If-None-Match": f'"x", {body.headers["etag"]}'})
    assert unchanged.status_code == 304 and not unchanged.content
    assert unchanged.headers["cache-control"] == body.headers["cache-control"]
    assert api.call("stranger", "GET", url, headers={"If-None-Match": body.headers["etag"]}).status_code == 404
    testing = api.call("admin", "GET", f"{P}/loras/sarah/versions/1.2.0").json()["files"][0]["sha256"]
    assert api.call("production", "GET", f"/api/v1/artifacts/{testing}").status_code == 404
    assert api.call("stranger", "GET", url).status_code == 404
    assert api.call("stranger", "GET", "/api/v1/resolve").json() == []
    partial = api.call("production", "GET", url, headers={"Range": "bytes=10-19"})
    assert partial.status_code == 206 and partial.content == body.content[10:20]
    assert partial.headers["cache-control"] == body.headers["cache-control"]


def test_upload_register_promote_over_http(api: Api, tmp_path: Path) -> None:
    data = make(tmp_path, "new", seed=77).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    up = api.call("trainer", "POST", "/api/v1/uploads?project=p1", content=data, headers={"X-Content-SHA256": digest})
    assert up.status_code == 201 and up.json()["sha256"] == digest
    body = {"bump": "minor", "changelog": "more data", "file": up.json()["upload_id"], "scores": {"c": 8.5}}
    created = api.call("trainer", "POST", f"{P}/loras/sarah/versions", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["version"] == "1.3.0" and created.json()["created_by"] == "trainer"
    assert list((api.home / "uploads").iterdir()) == []  # the upload is consumed
    assert api.call("trainer", "POST", f"{P}/loras/sarah/versions/1.3.0/promote").status_code == 403
    promoted = api.call("admin", "POST", f"{P}/loras/sarah/versions/1.3.0/promote", json={"reason": "ok"})
    assert promoted.json()["status"] == "current"
    events = api.call("admin", "GET", f"{P}/loras/sarah/history?limit=2").json()
    assert events[0]["actor"] == "admin" and events[0]["kind"] == "promoted"


def test_bad_uploads_keep_nothing(api: Api, tmp_path: Path) -> None:
    big = b"\0" * 2_000_001
    too_big = api.call("trainer", "POST", "/api/v1/uploads?project=p1", content=big)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "too_large"
    wrong = api.call(
        "trainer", "POST", "/api/v1/uploads?project=p1", content=b"abc", headers={"X-Content-SHA256": "0" * 64}
    )
    assert wrong.status_code == 400
    assert api.call("production", "POST", "/api/v1/uploads?project=p1", content=b"abc").status_code == 403
    assert list((api.home / "uploads").iterdir()) == []
    pickle_up = api.call("trainer", "POST", "/api/v1/uploads?project=p1", content=b"\x80\x04junk").json()
    refused = api.call(
        "trainer",
        "POST",
        f"{P}/loras/sarah/versions",
        json={"bump": "patch", "changelog": "x", "file": pickle_up["upload_id"]},
    )
    assert refused.status_code == 422 and "pickled" in refused.json()["error"]["message"]
    assert list((api.home / "uploads").iterdir()) == []


@pytest.mark.parametrize(
    "path",
    ["/api/v1/projects/..%2F..%2Fetc/loras", "/api/v1/projects/p1/loras/..%2Fx", "/api/v1/projects/P1/loras/a@b",
     "/api/v1/artifacts/..%2F..%2Fregistry.db", "/api/v1/uploads?project=../x"],
)  # fmt: skip
def test_path_tricks_are_refused(api: Api, path: str) -> None:
    method = "POST" if "uploads" in path else "GET"
    response = api.call("admin", method, path, content=b"x" if method == "POST" else None)
    assert response.status_code in (400, 404, 422), response.text
    assert "root:" not in response.text


def test_change_feed_answers_when_the_log_moves(api: Api) -> None:
    last = api.call("production", "GET", "/api/v1/changes?wait=0").json()["last_event_id"]
    idle = api.call("production", "GET", f"/api/v1/changes?since={last}&wait=0.2").json()
    assert idle == {"last_event_id": last, "changed": False}
    api.call("admin", "POST", f"{P}/loras/sarah/rollback", json={"reason": "x"})
    moved = api.call("production", "GET", f"/api/v1/changes?since={last}&wait=5").json()
    assert moved["changed"] and moved["last_event_id"] > last


def test_openapi_is_complete(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert {"/api/v1/uploads", "/api/v1/projects/{project}/resolve", "/api/v1/tokens", "/api/v1/changes"} <= set(
        spec["paths"]
    )
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_huge_ids_are_422_not_overflows(api: Api) -> None:
    for method, path in (
        ("GET", "/api/v1/webhooks/deliveries?webhook_id=9223372036854775808"),
        ("DELETE", "/api/v1/tokens/99999999999"),
        ("DELETE", "/api/v1/webhooks/2147483648"),
        ("GET", "/api/v1/changes?since=99999999999999999999&wait=0"),
    ):
        response = api.call("admin", method, path)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"]["code"] == "invalid_input"


def test_resolve_follows_changes_at_once(api: Api) -> None:
    def current() -> str:
        return api.call("production", "GET", f"{P}/resolve?lora=sarah").json()[0]["version"]

    assert current() == "1.1.0"
    assert current() == "1.1.0"  # served from the cache
    api.call("admin", "POST", f"{P}/loras/sarah/rollback", json={"reason": "regression"})
    assert current() == "1.0.0"
    api.call("admin", "POST", f"{P}/loras/sarah/versions/1.2.0/promote")
    assert current() == "1.2.0"


def test_revoked_token_is_refused_at_once(api: Api) -> None:
    assert api.call("trainer", "GET", f"{P}/loras").status_code == 200  # now cached as valid
    tokens = api.call("admin", "GET", "/api/v1/tokens").json()
    mine = next(t for t in tokens if t["user"] == "trainer" and t["revoked_at"] is None)
    assert api.call("admin", "DELETE", f"/api/v1/tokens/{mine['id']}").status_code == 200
    assert api.call("trainer", "GET", f"{P}/loras").status_code == 401


def test_history_pages_back_with_before(api: Api) -> None:
    everything = api.call("root", "GET", "/api/v1/projects/p1/loras/sarah/history").json()
    first = api.call("root", "GET", "/api/v1/projects/p1/loras/sarah/history?limit=2").json()
    rest = api.call("root", "GET", f"/api/v1/projects/p1/loras/sarah/history?before={first[-1]['id']}").json()
    assert [e["id"] for e in first + rest] == [e["id"] for e in everything] and len(everything) > 2
    assert api.call("root", "GET", "/api/v1/projects/p1/history?before=0").status_code == 422


@pytest.mark.parametrize("record", ["kept", "stale", "forged"])
def test_register_uses_the_digests_the_upload_worked_out_only_for_that_file(
    api: Api, tmp_path: Path, record: str
) -> None:
    """The upload hashes the file and its data section (AutoV3) as it arrives and keeps both beside
    it; registering it then skips reading the file again, but only while it is the file that was
    hashed. A record of another identity, or one that is not a record, is ignored: the file is hashed."""
    from registry.files.ingest import file_digests

    src = make(tmp_path, "digests", seed=91)
    expected = file_digests(src)
    up = api.call("trainer", "POST", "/api/v1/uploads?project=p1", content=src.read_bytes()).json()
    upload = api.home / "uploads" / up["upload_id"]
    kept = upload.with_name(f".{upload.name}.digests")
    recorded = json.loads(kept.read_text())
    assert (recorded["sha256"], recorded["autov3"]) == (expected.sha256, expected.autov3)
    if record == "stale":  # the identity no longer matches: were the record trusted, these digests would show
        kept.write_text(json.dumps({**recorded, "sha256": "0" * 64, "identity": [0, 0, 0, 0, 0]}))
    elif record == "forged":
        kept.write_text("not a record")
    body = {"bump": "patch", "changelog": "digests", "file": up["upload_id"]}
    created = api.call("trainer", "POST", f"{P}/loras/sarah/versions", json=body)
    assert created.status_code == 201, created.text
    (stored,) = created.json()["files"]
    assert (stored["source_sha256"], stored["source_autov3"]) == (expected.sha256, expected.autov3)
    assert list((api.home / "uploads").iterdir()) == []  # the upload and its record are consumed
