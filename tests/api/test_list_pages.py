"""`GET …/loras?limit=&after=`: keyset pages that cover every LoRA once, in order, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import Api
from tests.conftest import BACKENDS
from tests.helpers import register

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


def test_pages_cover_every_lora_once_in_order(api: Api, tmp_path: Path) -> None:
    for i, name in enumerate(("alpha", "bravo", "charlie", "delta")):
        register(api.wl, tmp_path, project="p1", lora=name, seed=10 + i)
    register(api.wl, tmp_path, project="p0", lora="zulu", seed=20)
    seen, after = [], None
    while True:
        query = "limit=2" + (f"&after={after}" if after else "")
        page = api.call("admin", "GET", f"/api/v1/projects/p1/loras?{query}").json()
        if not page:
            break
        assert len(page) <= 2
        seen += [row["name"] for row in page]
        after = page[-1]["name"]
    assert seen == ["alpha", "bravo", "charlie", "delta", "sarah"]
    everything = api.call("root", "GET", "/api/v1/loras?limit=3").json()
    assert [(r["project"], r["name"]) for r in everything] == [("p0", "zulu"), ("p1", "alpha"), ("p1", "bravo")]
    nxt = api.call("root", "GET", "/api/v1/loras?limit=3&after=p1/bravo").json()
    assert [r["name"] for r in nxt] == ["charlie", "delta", "sarah"]
    current = api.call("admin", "GET", "/api/v1/projects/p1/loras?limit=10&status=current").json()
    assert [r["name"] for r in current] == ["sarah"]
    # the admin of p1 lists p1 only, paged or not
    assert {r["project"] for r in api.call("admin", "GET", "/api/v1/loras?limit=50").json()} == {"p1"}
    for bad in ("limit=0", "limit=1001", "limit=x", "limit=2&after=" + "a" * 300):
        assert api.call("admin", "GET", f"/api/v1/projects/p1/loras?{bad}").status_code == 422, bad
