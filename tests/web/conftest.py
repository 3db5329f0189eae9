"""The dashboard on a seeded registry (tests/web/seed.py): an in-process client for the HTTP-level
tests, and a real server on a loopback port for the browser tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api import create_app
from registry.backends.local import Wanlora
from registry.settings import Settings
from tests.web.seed import POLICY, seed

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
NONCE = re.compile(r'name="nonce" value="([^"]+)"')


def dashboard_app(home: Path, database_url: str) -> tuple[FastAPI, dict[str, str]]:
    policy = home.parent / "dashboard-policy.toml"
    policy.write_text(POLICY)
    settings = Settings(
        home=home, database_url=database_url, policy_file=policy, webhook_allow_hosts="127.0.0.1",
        failed_sign_ins_per_address=10_000, failed_sign_ins_per_prefix=10_000,
    )  # fmt: skip
    app = create_app(settings, deliver_webhooks=False)
    wl: Wanlora = app.state.wanlora.wl
    return app, seed(wl, home.parent / "files").tokens


@dataclass
class Dash:
    app: FastAPI
    tokens: dict[str, str]

    def client(self, who: str | None = None) -> TestClient:
        """A browser-like client, signed in as ``who`` (its cookies kept between requests)."""
        client = TestClient(self.app, base_url="http://testserver", follow_redirects=False)
        if who is not None:
            sign_in(client, self.tokens[who])
        return client


def sign_in(client: TestClient, token: str) -> None:
    form = client.get("/signin")
    nonce = NONCE.search(form.text)
    assert nonce, form.text
    answer = client.post("/signin", data={"token": token, "nonce": nonce[1], "next": "/"})
    assert answer.status_code == 303, answer.text


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found[1]


@pytest.fixture
def dash(tmp_path: Path, database_url: str) -> Iterator[Dash]:
    (tmp_path / "files").mkdir()
    app, tokens = dashboard_app(tmp_path / "home", database_url)
    yield Dash(app, tokens)
    app.state.wanlora.wl.close()
