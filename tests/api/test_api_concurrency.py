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
