"""Failed sign-ins are rate-limited per token prefix and per client address (issue 11): a guesser gets
429 with Retry-After, valid tokens from other addresses go on working."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api import create_app
from registry.settings import Settings


def _app(tmp_path: Path) -> tuple[TestClient, str, object]:
    app = create_app(Settings(home=tmp_path / "home", failed_sign_ins_per_address=8, failed_sign_ins_per_prefix=4),
                     deliver_webhooks=False)  # fmt: skip
    with app.state.wanlora.wl.accounts() as acc:
        token = acc.bootstrap_admin().token  # type: ignore[union-attr]
    return TestClient(app, client=("10.0.0.1", 5000)), token, app


def _get(client: TestClient, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get("/api/v1/loras", headers=headers).status_code


def test_guessing_one_prefix_is_stopped(tmp_path: Path) -> None:
    client, token, app = _app(tmp_path)
    prefix = token[:12]
    assert _get(client, token) == 200  # its owner signed in just before
    assert [_get(client, prefix + f"guess{i}") for i in range(4)] == [401] * 4
    refused = client.get("/api/v1/loras", headers={"Authorization": f"Bearer {prefix}guess5"})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_failures"
    assert 1 <= int(refused.headers["retry-after"]) <= 61
    assert _get(client, "wlt_other-prefix-guess") == 401  # another prefix is judged on its own
    assert _get(client, token) == 200  # a token checked moments ago is answered from memory
    app.state.wanlora.auth = type(app.state.wanlora.auth)(0)  # once that memory has passed …
    assert _get(client, token) == 429  # … the prefix waits out its minute, whoever asks


def test_one_address_is_stopped_whatever_it_tries(tmp_path: Path) -> None:
    client, token, app = _app(tmp_path)
    assert [_get(client, f"wlt_{i:08d}xxxx") for i in range(8)] == [401] * 8
    assert _get(client, "wlt_something-new") == 429
    assert _get(client, token) == 429  # this address waits, even with a good token it had not used before
    elsewhere = TestClient(app, client=("10.0.0.2", 5000))  # type: ignore[arg-type]
    assert _get(elsewhere, token) == 200
    assert _get(client, None) == 401  # no token at all is not a guess, and is not counted


def test_bodies_of_refused_callers_are_not_read(tmp_path: Path) -> None:
    client, _, _ = _app(tmp_path)
    for i in range(9):
        client.post("/api/v1/users", content=b"{bad json", headers={"Authorization": f"Bearer wlt_{i:08d}x"})
    answer = client.post("/api/v1/users", content=b"{bad json", headers={"Authorization": "Bearer wlt_zzzzzzzzx"})
    assert answer.status_code == 429  # before anything about the body
