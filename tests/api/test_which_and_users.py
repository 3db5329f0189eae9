"""`which` over the API sees only what the caller may see; removing a user revokes their tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.files.ingest import file_digests
from tests.api.conftest import Api
from tests.conftest import BACKENDS

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


def test_which_finds_a_version_by_any_digest_within_the_callers_view(api: Api, tmp_path: Path) -> None:
    digests = file_digests(tmp_path / "sarah-2.safetensors")  # version 1.2.0 of p1/sarah, testing
    params = {"sha256": digests.sha256, "payload_sha256": digests.payload_sha256, "autov3": digests.autov3}
    [match] = api.call("trainer", "GET", "/api/v1/which", params=params).json()
    assert (match["version"], match["status"], match["by"]) == ("1.2.0", "testing", ["source", "payload", "autov3"])
    only_payload = api.call("trainer", "GET", "/api/v1/which", params={"payload_sha256": digests.payload_sha256})
    assert [m["by"] for m in only_payload.json()] == [["payload"]]
    assert api.call("production", "GET", "/api/v1/which", params=params).json() == []  # testing: not theirs
    assert api.call("stranger", "GET", "/api/v1/which", params=params).json() == []  # another project
    assert api.call("none", "GET", "/api/v1/which", params=params).status_code == 401
    for bad in ({"sha256": "xyz"}, {}, {"autov3": "A" * 64}, {"sha256": "0" * 65}):
        answer = api.call("trainer", "GET", "/api/v1/which", params=bad)
        assert 400 <= answer.status_code < 500, (bad, answer.text)


def test_removing_a_user_revokes_every_token_at_once(api: Api) -> None:
    assert api.call("trainer", "GET", "/api/v1/loras").status_code == 200
    assert api.call("admin", "DELETE", "/api/v1/users/trainer").status_code == 403  # p1's admin only
    answer = api.call("root", "DELETE", "/api/v1/users/trainer")
    assert answer.status_code == 200, answer.text
    assert answer.json()["revoked_tokens"] == 1 and answer.json()["removed_at"]
    assert api.call("trainer", "GET", "/api/v1/loras").status_code == 401
    names = {u["name"] for u in api.call("root", "GET", "/api/v1/users").json()}
    assert "trainer" not in names
    removed = {u["name"]: u for u in api.call("root", "GET", "/api/v1/users", params={"removed": True}).json()}
    assert removed["trainer"]["removed_at"]
    assert api.call("root", "DELETE", "/api/v1/users/trainer").status_code == 404  # already removed
    token = api.call("root", "POST", "/api/v1/tokens", json={"user": "trainer", "project": "p1", "role": "trainer"})
    assert token.status_code == 404 and "was removed" in token.text
    self_removal = api.call("root", "DELETE", "/api/v1/users/root")
    assert 400 <= self_removal.status_code < 500 and "yourself" in self_removal.text
    assert api.call("root", "POST", "/api/v1/users", json={"name": "trainer"}).status_code == 201  # back again
    assert api.call("trainer", "GET", "/api/v1/loras").status_code == 401  # the old token stays revoked
