"""An API on a fresh database with a token for every kind of caller."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import create_app
from registry.backends.local import Wanlora
from registry.settings import Settings
from tests.helpers import register


@dataclass
class Api:
    client: TestClient
    wl: Wanlora
    tokens: dict[str, str | None]
    home: Path

    def call(self, who: str, method: str, path: str, headers: dict[str, str] | None = None, **kw: object) -> Any:
        token = self.tokens[who]
        auth = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return self.client.request(method, path, headers={**auth, **(headers or {})}, **kw)  # type: ignore[arg-type]


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Api:
    settings = Settings(
        home=tmp_path / "home",
        database_url=database_url,
        max_upload_bytes=2_000_000,
        webhook_allow_hosts="127.0.0.1",
        failed_sign_ins_per_address=100_000,  # the matrices present bad tokens on purpose, many times
        failed_sign_ins_per_prefix=100_000,
    )
    app = create_app(settings)
    wl: Wanlora = app.state.wanlora.wl
    for i, v in enumerate(("1.0.0", "1.1.0", "1.2.0")):
        register(wl, tmp_path, project="p1", version=v, seed=i)
    with wl.registry() as reg:
        reg.promote(project="p1", name="sarah", version="1.0.0")
        reg.promote(project="p1", name="sarah", version="1.1.0")
    tokens: dict[str, str | None] = {"none": None, "bad": "wlt_not-a-real-token"}
    with wl.accounts() as acc:
        tokens["root"] = acc.bootstrap_admin(name="root").token  # type: ignore[union-attr]
        for role in ("trainer", "production", "admin"):
            acc.add_user(name=role)
            tokens[role] = acc.create_token(user=role, project="p1", role=role).token
        acc.add_user(name="stranger")
        tokens["stranger"] = acc.create_token(user="stranger", project="p2", role="admin").token
        tokens["expired"] = acc.create_token(
            user="admin", project="p1", role="admin", expires_in=timedelta(seconds=-1)
        ).token
        revoked = acc.create_token(user="admin", project="p1", role="admin")
        acc.revoke_token(token_id=revoked.id)
        tokens["revoked"] = revoked.token
    return Api(TestClient(app), wl, tokens, tmp_path / "home")
