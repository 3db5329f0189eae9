"""The artifact store contract: content addressing, atomic writes, verification on read."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from registry.errors import IntegrityError, InvalidInput, NotFound
from registry.storage import LocalStore, open_store


def put(store: LocalStore, data: bytes) -> tuple[str, int, bool]:
    w = store.writer()
    for i in range(0, len(data), 1000):
        w.write(data[i : i + 1000])
    return w.commit()


def test_put_get_roundtrip_and_dedup(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = os.urandom(10_000)
    sha, size, created = put(store, data)
    assert sha == hashlib.sha256(data).hexdigest() and size == 10_000 and created
    assert put(store, data)[2] is False  # same bytes: nothing new
    with store.open(sha) as r:
        assert b"".join(iter(lambda: r.read(4096), b"")) == data
    assert store.exists(sha) and store.size(sha) == 10_000
    store.delete(sha)
    assert not store.exists(sha)
    with pytest.raises(NotFound):
        store.open(sha)


def test_corruption_is_detected_on_read(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    sha, _, _ = put(store, b"x" * 5000)
    path = store.path(sha)
    os.chmod(path, 0o644)
    path.write_bytes(b"y" * 5000)
    with pytest.raises(IntegrityError, match="corrupt"), store.open(sha) as r:
        while r.read(1024):
            pass


def test_aborted_write_leaves_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    w = store.writer()
    w.write(b"partial")
    w.abort()
    assert list(store.tmp_dir.iterdir()) == [] and list((tmp_path / "sha256").rglob("*")) == []


def test_digest_and_url_validation(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(InvalidInput):
        store.path("../../etc/passwd")
    with pytest.raises(InvalidInput, match="unsupported storage URL"):
        open_store("ftp://x/y")
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
