"""50 concurrent promote and rollback requests through the HTTP API (a real server on loopback): exactly
one current version and a gap-free event log, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from api import create_app
from registry.backends.local import Wanlora
from registry.settings import Settings
from tests.conftest import BACKENDS
from tests.helpers import make, register

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


@pytest.fixture
def live(tmp_path: Path, database_url: str) -> Iterator[tuple[str, Wanlora, str]]:
    application = create_app(Settings(home=tmp_path / "home", database_url=database_url), deliver_webhooks=False)
    wl: Wanlora = application.state.wanlora.wl
    with wl.accounts() as acc:
        token = acc.bootstrap_admin().token  # type: ignore[union-attr]
    srv = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}", wl, token
    srv.should_exit = srv.force_exit = True
    thread.join(10)


def test_fifty_concurrent_transitions(live: tuple[str, Wanlora, str], tmp_path: Path) -> None:
    url, wl, token = live
    versions = [f"1.{i}.0" for i in range(30)]
    for i, v in enumerate(versions):
        register(wl, tmp_path, version=v, seed=i, file=make(tmp_path, f"v{i}", seed=i, rank=1, blocks=1))
    with wl.registry() as reg:
        reg.promote(project="default", name="sarah", version=versions[0])
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    base = "/api/v1/projects/default/loras/sarah"
    requests = [
        ("POST", f"{base}/versions/{versions[1 + i // 2]}/promote") if i % 2 == 0 else ("POST", f"{base}/rollback")
        for i in range(50)
    ]
    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(lambda r: client.request(r[0], r[1], json={"reason": "load"}).status_code, requests))
    assert set(codes) <= {200, 409}, codes  # 409: a rollback with nothing left, or a version already moved on
    assert codes.count(200) >= 25
    with wl.registry(write=False) as reg:
        lora = reg.get_lora(project="default", name="sarah")
        events = list(reversed(reg.history(project="default", name="sarah")))
    assert sum(v.status.value == "current" for v in lora.versions) == 1
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    state: dict[str, str] = {}
    for e in events:
        if e.to_status:
            assert state.get(e.version or "") == e.from_status
            state[e.version or ""] = e.to_status
            assert list(state.values()).count("current") <= 1
    assert state == {v.version: v.status.value for v in lora.versions}


def test_a_mixed_concurrent_load_answers_no_5xx(live: tuple[str, Wanlora, str], tmp_path: Path) -> None:
    """Reads, downloads, writes, bad tokens, hostile bodies and unknown routes from 32 connections at once
    (the kinds of request that gave 500s under load before): not one 5xx."""
    url, wl, token = live
    for i in range(4):
        register(wl, tmp_path, version=f"1.{i}.0", seed=i, file=make(tmp_path, f"m{i}", seed=i, rank=1, blocks=1))
    with wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0")
        sha = reg.get_version(project="default", name="sarah", version="1.0.0").files[0].sha256
    base = "/api/v1/projects/default/loras/sarah"
    good = {"Authorization": f"Bearer {token}"}
    kinds = [
        ("GET", "/api/v1/loras", good, None),
        ("GET", f"{base}", good, None),
        ("GET", f"{base}/history", good, None),
        ("GET", "/api/v1/projects/default/resolve", good, None),
        ("GET", f"/api/v1/artifacts/{sha}", good, None),
        ("POST", f"{base}/versions/1.{{n}}.0/promote", good, b'{"reason": "load", "override": true}'),
        ("POST", f"{base}/rollback", good, b'{"reason": "load"}'),
        ("POST", f"{base}/versions/1.1.0/annotations", good, b'{"scores": {"c": 1e999}}'),
        (
            "POST",
            "/api/v1/projects/default/loras",
            good,
            b'{"name": "x", "category": "style", "base_model": "' + b"[" * 500,
        ),
        ("GET", "/api/v1/loras", {"Authorization": "Bearer wlt_nope"}, None),
        ("GET", f"{base}/diff?old=1.0.0&new=9" + "9" * 30 + ".0.0", good, None),
        ("GET", "/api/v1/no/such/route", good, None),
        ("DELETE", "/api/v1/loras", good, None),
    ]
    client = httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=32))

    def send(i: int) -> int:
        method, path, headers, body = kinds[i % len(kinds)]
        path = path.replace("{n}", str(1 + i % 3))
        return client.request(method, path, headers=headers, content=body).status_code

    with ThreadPoolExecutor(max_workers=32) as pool:
        codes = list(pool.map(send, range(13 * 40)))
    assert [c for c in codes if c >= 500] == [], sorted(set(codes))
    assert 200 in codes and 401 in codes and 404 in codes
