"""Every answer has the documented error shape, and a request without a good token is told so before
anything about its body (issue 11, item 11)."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api
from tests.conftest import BACKENDS

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
BROKEN = {"content": b'{"name": "x", "category": ', "headers": {"Content-Type": "application/json"}}


def test_a_malformed_body_is_refused_after_authentication_in_the_error_shape(api: Api) -> None:
    for who in ("none", "bad", "expired", "revoked"):
        answer = api.call(who, "POST", "/api/v1/projects/p1/loras", **BROKEN)  # type: ignore[arg-type]
        assert answer.status_code == 401, who
        assert answer.json()["error"]["code"] == "unauthenticated" and "detail" not in answer.json()
    answer = api.call("trainer", "POST", "/api/v1/projects/p1/loras", **BROKEN)  # type: ignore[arg-type]
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_input"
    assert "JSON" in answer.json()["error"]["message"]


def test_unknown_routes_and_methods_answer_in_the_error_shape(api: Api) -> None:
    missing = api.call("admin", "GET", "/api/v1/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = api.call("admin", "DELETE", "/api/v1/health")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
