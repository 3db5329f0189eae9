"""The hostile-file corpus through the HTTP API: each file is uploaded and registered by a trainer, and
refused with a 4xx naming the problem; nothing is stored and the upload is gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import Api
from tests.conftest import stored_objects
from tests.registry.test_hostile_files import CASES

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_upload_is_refused_with_a_4xx(api: Api, tmp_path: Path, case: str) -> None:
    build, _ = CASES[case]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    path = build(corpus)
    before = stored_objects(api.wl.store)  # type: ignore[arg-type]
    up = api.call("trainer", "POST", "/api/v1/uploads?project=p1", content=path.read_bytes())
    if up.status_code == 413:  # over this server's 2 MB upload limit: refused before it is even read
        assert up.json()["error"]["code"] == "too_large" and list((api.home / "uploads").iterdir()) == []
        return
    assert up.status_code == 201
    body = {"version": "9.0.0", "changelog": "hostile", "file": up.json()["upload_id"], "category": "style",
            "base_model": "wan2.2-ti2v-5b"}  # fmt: skip
    answer = api.call("trainer", "POST", "/api/v1/projects/p1/loras/h/versions", json=body)
    assert 400 <= answer.status_code < 500, (case, answer.status_code, answer.text)
    assert answer.json()["error"]["message"]
    assert stored_objects(api.wl.store) == before  # type: ignore[arg-type]
    assert list((api.home / "uploads").iterdir()) == []
