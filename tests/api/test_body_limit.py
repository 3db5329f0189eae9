"""JSON request bodies are bounded (2 MB): 413 in the documented shape, by Content-Length or while a
chunked body streams in; file uploads keep their own limit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.bodylimit import MAX_JSON_BODY
from tests.api.conftest import Api
from tests.conftest import BACKENDS

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


def test_an_oversized_json_body_is_refused(api: Api) -> None:
    big = b'{"name": "' + b"x" * (MAX_JSON_BODY + 10) + b'"}'
    answer = api.call("root", "POST", "/api/v1/users", content=big, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"name": "'
        for _ in range(MAX_JSON_BODY // 65536 + 8):
            yield b"x" * 65536
        yield b'"}'

    answer = api.call("root", "POST", "/api/v1/users", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "at most" in answer.json()["error"]["message"]
    small = api.call("root", "POST", "/api/v1/users", json={"name": "fits"})
    assert small.status_code in (200, 201)
