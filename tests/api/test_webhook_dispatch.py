"""The server's webhook dispatcher, run by the app's lifespan as `wanlora serve` runs it: a change reaches
the receiver as soon as the event log moves, a failed delivery is tried again when its backoff is over,
an idle server leaves the deliveries table alone (no query loop), and stopping the server does not wait
for the dispatcher's sleep."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from api import create_app
from registry.backends.local import Wanlora
from registry.settings import Settings
from tests.conftest import BACKENDS
from tests.helpers import Receiver, register

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


def _until(check: Callable[[], bool], timeout: float = 15.0) -> float:
    """Seconds until ``check()`` holds."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.01)
    return time.monotonic() - start


class Server:
    def __init__(self, tmp_path: Path, database_url: str) -> None:
        settings = Settings(home=tmp_path / "home", database_url=database_url, webhook_allow_hosts="127.0.0.1")
        self.app = create_app(settings)
        self.wl: Wanlora = self.app.state.wanlora.wl
        self.statements: list[str] = []  # every SQL statement the server's engine runs

        def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            self.statements.append(statement)

        event.listen(self.wl.db.engine, "before_cursor_execute", seen)
        with self.wl.accounts() as acc:
            token = acc.bootstrap_admin().token  # type: ignore[union-attr]
        self.client = TestClient(self.app, headers={"Authorization": f"Bearer {token}"})

    def deliveries_queries(self) -> list[str]:
        return [s for s in self.statements if "webhook_deliveries" in s]


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    made = Server(tmp_path, database_url)
    with made.client:  # the lifespan: the change watcher and the dispatcher run
        yield made


def test_a_change_reaches_the_receiver_at_once_and_an_idle_server_queries_nothing(
    server: Server, tmp_path: Path, receiver: Receiver
) -> None:
    added = server.client.post("/api/v1/webhooks", json={"url": receiver.url, "project": "*", "events": ["register"]})
    assert added.status_code == 201, added.text
    time.sleep(0.3)  # the dispatcher's first look, at start
    server.statements.clear()
    time.sleep(1.5)
    assert server.deliveries_queries() == []  # asleep: a loop polling every 0.5 s would have asked three times
    # A change the server did not make itself (the registry on its host, as a CLI there would): the change
    # watcher sees the event log move and wakes the dispatcher.
    register(server.wl, tmp_path, version="1.0.0", seed=1)
    waited = _until(lambda: len(receiver.requests) == 1)
    assert waited < 5  # long before the dispatcher's safety net (30 s) would have woken it
    assert json.loads(receiver.requests[0][1])["event"] == "register"
    # the log says delivered once the worker has recorded it
    _until(lambda: server.client.get("/api/v1/webhooks/deliveries").json()[0]["status"] == "delivered")
    time.sleep(0.3)  # the round its worker's nudge starts
    server.statements.clear()
    time.sleep(1.0)
    assert server.deliveries_queries() == []  # nothing more is due: asleep again


def test_a_failed_delivery_is_tried_again_when_its_backoff_is_over(
    server: Server, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.status = 500
    server.client.post("/api/v1/webhooks", json={"url": receiver.url, "project": "*", "events": ["register"]})
    register(server.wl, tmp_path, version="1.0.0", seed=1)
    _until(lambda: len(receiver.requests) == 1)
    receiver.status = 200
    waited = _until(lambda: len(receiver.requests) == 2)
    # the first retry is due 2 s after the failure (the dispatcher's backoff): at that time, woken by
    # nothing but the due time, neither at once nor at the 30 s safety net
    assert 1.0 < waited < 10
    [delivery] = server.client.get("/api/v1/webhooks/deliveries").json()
    assert delivery["status"] == "delivered" and delivery["attempts"] == 2


def test_stopping_the_server_does_not_wait_for_the_dispatchers_sleep(tmp_path: Path, database_url: str) -> None:
    made = Server(tmp_path, database_url)
    with made.client:
        time.sleep(0.3)  # asleep now, for up to the 30 s safety net
        start = time.monotonic()
    assert time.monotonic() - start < 5  # the lifespan waits up to 10 s for the dispatcher's thread
