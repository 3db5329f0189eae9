"""Webhook egress (issue 11, item 5): internal targets refused after DNS and on redirects unless allowed,
timestamped signatures, per-hook time budgets, and a hanging receiver that delays no other hook."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from registry.backends.local import Wanlora
from registry.domain.webhooks import sign, verify
from registry.services import egress
from registry.services.delivery import Dispatcher
from registry.services.egress import EgressPolicy, TargetRefused
from tests.conftest import BACKENDS
from tests.helpers import register


class Receiver:
    """A real HTTP receiver on loopback. ``hold`` makes it wait before answering; ``redirect`` makes it
    answer 307 to that URL."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.hold: threading.Event | None = None
        self.redirect: str | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.hold is not None:
                    receiver.hold.wait(20)
                self.send_response(307 if receiver.redirect else 200)
                if receiver.redirect:
                    self.send_header("Location", receiver.redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made = [Receiver(), Receiver()]
    yield made
    for r in made:
        if r.hold is not None:
            r.hold.set()
        r.server.shutdown()


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Names that resolve to the given addresses, as a lying or rebinding DNS server would answer (no
    resolver can be reached from the tests); every other lookup is the real one."""
    answers: dict[str, str] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        numeric_only = kwargs.get("flags", 0) & socket.AI_NUMERICHOST
        if host in answers and not numeric_only:
            return real(answers[host], port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(egress.socket, "getaddrinfo", getaddrinfo)
    return answers


INTERNAL = [
    "http://127.0.0.1/h",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/h",
    "http://2130706433/h",
    "http://0x7f000001/h",
    "http://0177.0.0.1/h",
    "http://127.1/h",
    "http://localhost:5432/",
    "http://api.localhost/h",
    "http://10.0.0.5/h",
    "http://172.16.0.1/h",
    "http://192.168.1.1/h",
    "http://100.64.0.1/h",
    "http://0.0.0.0/h",
    "http://[::]/h",
    "http://[::ffff:127.0.0.1]/h",
    "http://[::ffff:7f00:1]/h",
    "http://[2002:7f00:1::]/h",
    "http://[64:ff9b::a9fe:a9fe]/h",
    "http://[fe80::1]/h",
    "http://[fd00::1]/h",
    "http://224.0.0.1/h",
    "https://user:pass@hooks.example.com/h",
    "http://hooks.example.com@127.0.0.1/h",
    "file:///etc/passwd",
    "gopher://hooks.example.com/",
]


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_targets_are_refused_when_added(url: str, wl: Wanlora) -> None:
    with pytest.raises(TargetRefused), wl.webhooks() as hooks:
        hooks.add(url=url, project="*", events=["register"])


def test_allowed_hosts_let_named_internal_targets_through() -> None:
    policy = EgressPolicy.allowing("10.1.0.0/16", "hooks.internal", "127.0.0.1")
    policy.check_static("http://10.1.2.3/h")
    policy.check_static("http://hooks.internal/h")
    policy.check_static("http://127.0.0.1:9/h")
    with pytest.raises(TargetRefused):
        policy.check_static("http://10.2.0.1/h")
    with pytest.raises(TargetRefused):
        policy.check_static("http://[::1]/h")


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_a_name_that_resolves_inside_is_refused_at_delivery(
    wl: Wanlora, tmp_path: Path, receivers: list[Receiver], fake_dns: dict[str, str]
) -> None:
    fake_dns["hooks.example.com"] = "127.0.0.1"  # public at add time, loopback when delivered (rebinding)
    with wl.webhooks() as hooks:
        hooks.add(url=f"http://hooks.example.com:{receivers[0].port}/h", project="*", events=["register"])
    register(wl, tmp_path)
    assert Dispatcher(wl.db).run_once() == 1
    with wl.webhooks(write=False) as hooks:
        [d] = hooks.deliveries()
    assert d.status == "pending" and "resolves to 127.0.0.1" in (d.last_error or "")
    assert receivers[0].requests == []  # nothing reached it


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_an_allowed_name_is_sent_to_the_address_that_was_checked(
    wl: Wanlora, tmp_path: Path, receivers: list[Receiver], fake_dns: dict[str, str]
) -> None:
    fake_dns["hooks.internal"] = "127.0.0.1"
    wl.egress = EgressPolicy.allowing("hooks.internal")
    with wl.webhooks() as hooks:
        hooks.add(url=f"http://hooks.internal:{receivers[0].port}/h", project="*", events=["register"])
    register(wl, tmp_path)
    assert Dispatcher(wl.db, egress=wl.egress).run_once() == 1
    [(headers, _)] = receivers[0].requests
    assert headers["host"] == f"hooks.internal:{receivers[0].port}"  # the URL's name, sent to the checked address


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_redirects_are_checked_again(wl: Wanlora, tmp_path: Path, receivers: list[Receiver]) -> None:
    first, second = receivers
    wl.egress = EgressPolicy.allowing("127.0.0.1")
    with wl.webhooks() as hooks:
        hooks.add(url=first.url, project="*", events=["register"])
    first.redirect = "http://169.254.169.254/latest/meta-data/"
    register(wl, tmp_path, version="1.0.0", seed=1)
    dispatcher = Dispatcher(wl.db, egress=wl.egress)
    assert dispatcher.run_once() == 1
    with wl.webhooks(write=False) as hooks:
        [d] = hooks.deliveries()
    assert "refused: 169.254.169.254" in (d.last_error or "") and d.status == "pending"
    first.redirect = second.url  # a redirect to an allowed receiver is followed, with the same signed body
    register(wl, tmp_path, version="1.1.0", seed=2)
    dispatcher.run_once()
    assert len(second.requests) == 1 and json.loads(second.requests[0][1])["version"] == "1.1.0"
    dispatcher.close()


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_a_hanging_receiver_delays_no_other_hook(wl: Wanlora, tmp_path: Path, receivers: list[Receiver]) -> None:
    slow, fast = receivers
    slow.hold = threading.Event()
    wl.egress = EgressPolicy.allowing("127.0.0.1")
    with wl.webhooks() as hooks:
        slow_hook = hooks.add(url=slow.url, project="*", events=["register"], timeout=30)
        hooks.add(url=fast.url, project="*", events=["register"])
    dispatcher = Dispatcher(wl.db, egress=wl.egress)
    register(wl, tmp_path, version="1.0.0", seed=1)
    dispatcher.dispatch()
    register(wl, tmp_path, version="1.1.0", seed=2)  # while the slow receiver still holds the first one
    deadline = time.monotonic() + 20
    while len(fast.requests) < 2 and time.monotonic() < deadline:
        dispatcher.dispatch()
        time.sleep(0.05)
    assert len(fast.requests) == 2 and len(slow.requests) == 1  # both for the fast hook, the slow one still held
    with wl.webhooks(write=False) as hooks:
        pending = [d for d in hooks.deliveries() if d.webhook_id == slow_hook.id]
    assert {d.status for d in pending} == {"pending"}
    slow.hold.set()
    dispatcher.close()


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_each_hook_has_its_own_time_budget(wl: Wanlora, tmp_path: Path, receivers: list[Receiver]) -> None:
    slow = receivers[0]
    slow.hold = threading.Event()
    wl.egress = EgressPolicy.allowing("127.0.0.1")
    with wl.webhooks() as hooks:
        hooks.add(url=slow.url, project="*", events=["register"], timeout=0.5)
    register(wl, tmp_path)
    assert Dispatcher(wl.db, egress=wl.egress).run_once() == 1
    with wl.webhooks(write=False) as hooks:
        [d] = hooks.deliveries()
    assert d.last_error == "timed out" and d.status == "pending"


def test_closed_and_silent_ports_look_the_same_in_the_log(wl: Wanlora, tmp_path: Path) -> None:
    wl.egress = EgressPolicy.allowing("127.0.0.1")
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()  # accepts, never answers HTTP
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
    with wl.webhooks() as hooks:
        hooks.add(url=f"http://127.0.0.1:{closed.getsockname()[1]}/", project="*", events=["register"])
    register(wl, tmp_path)
    Dispatcher(wl.db, egress=wl.egress).run_once()
    with wl.webhooks(write=False) as hooks:
        [d] = hooks.deliveries()
    assert d.last_error == "could not connect" and "Errno" not in (d.last_error or "")
    listening.close()
    closed.close()


def test_signatures_cover_a_timestamp_and_refuse_replays() -> None:
    body, secret = b'{"event":"promote"}', "s" * 32
    now = int(time.time())
    header = sign(secret, body, now)
    assert header.startswith(f"t={now},v1=") and verify(secret, header, body)
    assert not verify(secret, header, body.replace(b"promote", b"rollback"))
    assert not verify("t" * 32, header, body)
    assert not verify(secret, sign(secret, body, now - 301), body)  # replayed later than the tolerance
    assert verify(secret, sign(secret, body, now - 301), body, tolerance=600)
    assert not verify(secret, "v1=" + header.split("v1=")[1], body)  # no timestamp
    assert not verify(secret, "garbage", body)


def test_secrets_are_at_least_16_bytes(wl: Wanlora) -> None:
    wl.egress = EgressPolicy.allowing("127.0.0.1")
    with pytest.raises(Exception, match="16 bytes"), wl.webhooks() as hooks:
        hooks.add(url="http://127.0.0.1:9/h", project="*", events=["register"], secret="x" * 15)
    with wl.webhooks() as hooks:
        assert len(hooks.add(url="http://127.0.0.1:9/h", project="*", events=["register"]).secret) >= 32
