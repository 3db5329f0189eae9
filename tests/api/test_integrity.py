"""Stored files that fail their digest (issue 11, item 11): never served, 500 with a clear code, logged,
their versions marked for repair, and repaired from the source file; `wanlora gc` and its orphans."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from registry.blobs.local import LocalStore
from registry.domain.errors import InvalidFile, InvalidInput
from registry.files.ingest import ingest_lora
from tests.api.conftest import Api
from tests.conftest import BACKENDS
from tests.helpers import make

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)


def _current_sha(api: Api) -> str:
    with api.wl.registry(write=False) as reg:
        return reg.get_version(project="p1", name="sarah", version="1.1.0").files[0].sha256


def _corrupt(store: LocalStore, sha: str) -> None:
    path = store.path(sha)
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(-64, os.SEEK_END)
        fh.write(b"\xff" * 64)


def test_a_corrupt_file_is_never_served_and_is_repaired_from_its_source(
    api: Api, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sha = _current_sha(api)
    good = api.call("production", "GET", f"/api/v1/artifacts/{sha}")
    assert good.status_code == 200 and good.headers["etag"] == f'"{sha}"'
    _corrupt(api.wl.store, sha)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="wanlora.integrity"):
        for _ in range(2):  # the first answer finds it, the next ones know it
            bad = api.call("production", "GET", f"/api/v1/artifacts/{sha}")
            assert bad.status_code == 500 and bad.json()["error"]["code"] == "corrupt_artifact"
            assert "marked for repair" in bad.json()["error"]["message"]
    assert any(sha in r.getMessage() for r in caplog.records)
    shown = api.call("admin", "GET", "/api/v1/projects/p1/loras/sarah/versions/1.1.0").json()
    assert shown["files"][0]["needs_repair"] is True
    history = api.call("admin", "GET", "/api/v1/projects/p1/loras/sarah/history").json()
    assert history[0]["kind"] == "needs_repair" and history[0]["version"] == "1.1.0"
    report = api.wl.gc(verify=True)
    assert report.needs_repair == [sha]
    with pytest.raises(InvalidInput, match="not the source"):
        api.wl.repair(make(tmp_path, "unrelated", seed=99))
    assert api.wl.repair(tmp_path / "sarah-1.safetensors") == ["sarah@1.1.0"]
    again = api.call("production", "GET", f"/api/v1/artifacts/{sha}")
    assert again.status_code == 200 and again.headers["etag"] == f'"{sha}"'
    assert api.wl.gc(verify=True).needs_repair == []


def test_gc_reports_orphans_and_deletes_them_only_when_asked(api: Api, tmp_path: Path) -> None:
    store: LocalStore = api.wl.store  # type: ignore[assignment]
    orphan = ingest_lora(make(tmp_path, "orphan", seed=42), store)  # stored, never registered (a killed register)
    young = ingest_lora(make(tmp_path, "young", seed=43), store)
    old = time.time() - 7200
    os.utime(store.path(orphan.sha256), (old, old))
    dead = store.tmp_dir / "put-otherhost-1-x"
    dead.write_bytes(b"partial")
    os.utime(dead, (old, old))
    stale = api.home / "uploads" / "u_stale-partial-upload"
    stale.write_bytes(b"half a file")
    os.utime(stale, (old, old))
    record = stale.with_name(f".{stale.name}.digests")  # its digests go with it; a live upload's stay
    record.write_text("{}")
    live = api.home / "uploads" / "u_live-upload-being-written"
    live.write_bytes(b"x")
    live.with_name(f".{live.name}.digests").write_text("{}")
    report = api.wl.gc()
    assert report.uploads_removed == 1 and not stale.exists() and not record.exists()
    assert live.exists() and live.with_name(f".{live.name}.digests").exists()
    assert [o.sha256 for o in report.orphans] == [orphan.sha256]  # not the young one: it may be in flight
    assert report.temp_files_removed == 1 and not dead.exists()
    assert store.exists(orphan.sha256) and not report.deleted
    deleted = api.wl.gc(delete=True)
    assert deleted.deleted and not store.exists(orphan.sha256) and store.exists(young.sha256)
    assert store.exists(_current_sha(api))  # a referenced file is never an orphan


def test_a_source_rewritten_during_register_is_refused(api: Api, tmp_path: Path) -> None:
    src = make(tmp_path, "moving", seed=7, blocks=10)
    other = make(tmp_path, "other", seed=8, blocks=10)
    calls = []

    def rewrite(done: int, total: int) -> None:
        if not calls:  # mid-copy, another writer replaces the file's contents in place
            with open(src, "r+b") as fh:
                fh.seek(-4096, os.SEEK_END)
                fh.write(other.read_bytes()[-4096:])
        calls.append(done)

    before = set(s for s, _, _ in api.wl.store.listing())
    with pytest.raises(InvalidFile, match="changed while it was being registered"):
        ingest_lora(src, api.wl.store, progress=rewrite)
    assert set(s for s, _, _ in api.wl.store.listing()) == before  # nothing stored
