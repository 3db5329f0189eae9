"""The change feed and the cached answers follow the event log without querying it in a loop: the
server's watcher waits on LISTEN (PostgreSQL) or the database files (SQLite), and a change made by
another process — here another engine on the same database — wakes parked long polls at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from registry.backends.local import Wanlora
from registry.blobs.local import LocalStore
from registry.db.engine import Database
from registry.settings import Settings
from tests.conftest import BACKENDS, NO_GATE
from tests.helpers import register

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


def _app(tmp_path: Path, database_url: str) -> tuple[TestClient, str, Wanlora]:
    app = create_app(Settings(home=tmp_path / "home", database_url=database_url), deliver_webhooks=False)
    wl: Wanlora = app.state.wanlora.wl
    register(wl, tmp_path, project="p1", version="1.0.0", seed=1)
    register(wl, tmp_path, project="p1", version="1.1.0", seed=2)
    with wl.accounts() as acc:
        token = acc.bootstrap_admin(name="root").token  # type: ignore[union-attr]
    return TestClient(app), str(token), wl


def test_a_parked_long_poll_wakes_on_another_process_write_without_polling(tmp_path: Path, database_url: str) -> None:
    client, token, server_wl = _app(tmp_path, database_url)
    other = Wanlora(db=Database(database_url), store=LocalStore(tmp_path / "home" / "artifacts"), actor="other",
                    policy=NO_GATE)  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    with client:  # the lifespan starts the watcher
        generation = client.app.state.wanlora.generation  # type: ignore[attr-defined]
        last = client.get("/api/v1/changes?wait=0", headers=auth).json()["last_event_id"]
        answers: list[tuple[float, dict]] = []

        def park() -> None:
            answer = client.get(f"/api/v1/changes?since={last}&wait=20", headers=auth)
            answers.append((time.monotonic(), answer.json()))

        waiter = threading.Thread(target=park)
        waiter.start()
        time.sleep(0.3)
        reads_before = generation.reads
        time.sleep(1.5)  # parked: nothing happens, and nothing is read
        assert generation.reads - reads_before == 0
        assert not answers
        written = time.monotonic()
        with other.registry() as reg:
            reg.promote(project="p1", name="sarah", version="1.0.0")
        waiter.join(10)
        assert answers, "the long poll did not answer"
        woke, body = answers[0]
        assert body["changed"] and body["last_event_id"] > last
        assert woke - written < 1.0
        assert generation.reads - reads_before <= 3  # one read per change signal, not a loop

        # the cached resolve answer moved with it, and its ETag with it
        first = client.get("/api/v1/projects/p1/resolve", headers=auth)
        assert first.json()[0]["version"] == "1.0.0"
        etag = first.headers["etag"]
        assert client.get("/api/v1/projects/p1/resolve", headers={**auth, "If-None-Match": etag}).status_code == 304
        with other.registry() as reg:
            reg.promote(project="p1", name="sarah", version="1.1.0")
        deadline = time.monotonic() + 5
        while generation.current() == body["last_event_id"] and time.monotonic() < deadline:
            time.sleep(0.01)
        moved = client.get("/api/v1/projects/p1/resolve", headers={**auth, "If-None-Match": etag})
        assert moved.status_code == 200 and moved.json()[0]["version"] == "1.1.0" and moved.headers["etag"] != etag
    other.close()
    server_wl.close()


def test_etags_are_per_caller_and_a_bad_token_gets_no_304(tmp_path: Path, database_url: str) -> None:
    client, token, server_wl = _app(tmp_path, database_url)
    with server_wl.registry() as reg:
        reg.promote(project="p1", name="sarah", version="1.0.0")
    with server_wl.accounts() as acc:
        acc.add_user(name="prod")
        prod = acc.create_token(user="prod", project="p1", role="production").token
    admin = client.get("/api/v1/resolve", headers={"Authorization": f"Bearer {token}"})
    production = client.get("/api/v1/resolve", headers={"Authorization": f"Bearer {prod}"})
    assert admin.status_code == production.status_code == 200
    assert admin.headers["etag"] != production.headers["etag"]
    stolen = {"If-None-Match": admin.headers["etag"]}
    assert client.get("/api/v1/resolve", headers={**stolen, "Authorization": f"Bearer {prod}"}).status_code == 200
    assert client.get("/api/v1/resolve", headers={**stolen, "Authorization": "Bearer wlt_nope"}).status_code == 401
    assert client.get("/api/v1/resolve", headers=stolen).status_code == 401
    server_wl.close()
