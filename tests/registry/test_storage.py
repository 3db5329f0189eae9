"""The artifact store contract, run against the local folder and a real S3-protocol server (moto's
server mode on loopback, driven through boto3)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from registry.backends.local import Wanlora
from registry.blobs.base import ArtifactStore, BackgroundHash
from registry.blobs.factory import open_store
from registry.blobs.local import LocalStore
from registry.blobs.s3 import S3Store
from registry.db.engine import Database
from registry.domain.errors import IntegrityError, InvalidInput, NotFound
from registry.domain.register import RegisterRequest
from registry.files.synth import synth_lora
from registry.sync.comfyui import sync_comfyui
from tests.conftest import NO_GATE, make_s3


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return make_s3(request.getfixturevalue("s3_endpoint"), multipart_threshold=5 * 1024 * 1024)


def put(store: ArtifactStore, data: bytes, chunk: int = 1000) -> tuple[str, int, bool]:
    w = store.writer()
    for i in range(0, len(data), chunk):
        w.write(data[i : i + chunk])
    return w.commit()


def read_all(store: ArtifactStore, sha: str) -> bytes:
    with store.open(sha) as r:
        return b"".join(iter(lambda: r.read(1 << 16), b""))


def overwrite(store: ArtifactStore, sha: str, data: bytes) -> None:
    if isinstance(store, LocalStore):
        path = store.path(sha)
        os.chmod(path, 0o644)
        path.write_bytes(data)
    else:
        assert isinstance(store, S3Store)
        store.client.put_object(Bucket=store.bucket, Key=store.key(sha), Body=data)


def test_put_get_roundtrip_and_dedup(any_store: ArtifactStore) -> None:
    data = os.urandom(10_000)
    sha, size, created = put(any_store, data)
    assert sha == hashlib.sha256(data).hexdigest() and size == 10_000 and created
    assert put(any_store, data)[2] is False  # same bytes: nothing new
    assert read_all(any_store, sha) == data
    assert any_store.exists(sha) and any_store.size(sha) == 10_000
    any_store.delete(sha)
    assert not any_store.exists(sha)
    with pytest.raises(NotFound):
        any_store.open(sha)
    with pytest.raises(NotFound):
        any_store.size(sha)


def test_a_duplicate_copy_is_removed_after_its_commit_returns(tmp_path: Path) -> None:
    """The second copy of stored bytes goes on a side thread (freeing a big file's pages is slow),
    and it does go: nothing is left in the store's tmp folder, and the stored file is untouched."""
    store = LocalStore(tmp_path / "store")
    data = os.urandom(3 * 1024 * 1024)
    sha = put(store, data, chunk=1 << 20)[0]
    before = store.path(sha).stat()
    assert put(store, data, chunk=1 << 20) == (sha, len(data), False)
    for thread in threading.enumerate():
        if thread.name == "wanlora-discard":
            thread.join(10)
    assert list(store.tmp_dir.iterdir()) == []
    after = store.path(sha).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert read_all(store, sha) == data


def test_large_object_streams(any_store: ArtifactStore) -> None:
    data = os.urandom(12 * 1024 * 1024)  # above the S3 store's multipart threshold in this suite
    sha, size, _ = put(any_store, data, chunk=1 << 20)
    assert size == len(data) and read_all(any_store, sha) == data


def test_corruption_is_detected_on_read(any_store: ArtifactStore) -> None:
    sha, _, _ = put(any_store, b"x" * 5000)
    overwrite(any_store, sha, b"y" * 5000)
    with pytest.raises(IntegrityError, match="corrupt"):
        read_all(any_store, sha)


def test_aborted_write_leaves_nothing(any_store: ArtifactStore) -> None:
    w = any_store.writer()
    w.write(b"partial")
    w.abort()
    if isinstance(any_store, LocalStore):
        assert list(any_store.tmp_dir.iterdir()) == [] and list((any_store.root / "sha256").rglob("*")) == []
    else:
        assert isinstance(any_store, S3Store)
        assert any_store.client.list_objects_v2(Bucket=any_store.bucket).get("KeyCount", 0) == 0


def test_digest_validation(any_store: ArtifactStore) -> None:
    with pytest.raises(InvalidInput):
        any_store.exists("../../etc/passwd")


def test_url_selection(tmp_path: Path, s3_endpoint: str) -> None:
    with pytest.raises(InvalidInput, match="unsupported storage URL"):
        open_store("ftp://x/y")
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}", endpoint_url="ignored"), LocalStore)
    s3 = open_store("s3://bucket/prefix", endpoint_url=s3_endpoint, region="us-east-1")
    assert isinstance(s3, S3Store) and s3.key("a" * 64) == f"prefix/sha256/aa/{'a' * 64}"
    with pytest.raises(InvalidInput, match="s3://bucket"):
        S3Store("s3:///nobucket")


def test_presigned_download_url(s3_endpoint: str) -> None:
    import urllib.request

    store = make_s3(s3_endpoint, presign=True)
    sha, _, _ = put(store, b"weights")
    url = store.download_url(sha)
    assert url is not None and url.startswith(s3_endpoint)
    with urllib.request.urlopen(url) as response:  # loopback only
        assert response.read() == b"weights"
    assert make_s3(s3_endpoint).download_url(sha) is None


def test_register_and_sync_through_s3(tmp_path: Path, s3_endpoint: str) -> None:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    wl = Wanlora(db=db, store=make_s3(s3_endpoint), actor="t", policy=NO_GATE)
    lora = synth_lora(tmp_path / "a.safetensors", base_model="wan2.2-ti2v-5b", seed=4)
    v = wl.register(
        RegisterRequest(project="p", lora="x", file=lora, changelog="c", version="1.0.0",
                        category="style", base_model="wan2.2-ti2v-5b")
    )  # fmt: skip
    with wl.registry() as reg:
        reg.promote(project="p", name="x", version="1.0.0")
        targets = reg.current_targets()
    report = sync_comfyui(targets, wl.store, tmp_path / "ComfyUI")
    out = tmp_path / "ComfyUI/models/loras/wanlora/p/style/x.safetensors"
    assert report.copied and hashlib.sha256(out.read_bytes()).hexdigest() == v.files[0].sha256
    db.dispose()


def test_background_hash_is_the_sha256_of_what_it_was_fed() -> None:
    """BackgroundHash hashes on a side thread, one chunk in flight: the digest is the plain sha256 of
    the chunks in order, views of a buffer that is overwritten at once included (a view is copied
    before it is handed over)."""
    h, plain = BackgroundHash(), hashlib.sha256()
    buf = bytearray(4096)
    for size in (0, 1, 4096, 3 * 1024 * 1024):
        data = os.urandom(size)
        h.update(data)
        plain.update(data)
        buf[:] = os.urandom(len(buf))
        h.update(memoryview(buf))
        plain.update(buf)
        buf[:] = bytes(len(buf))  # reused before the hasher may have got to it
    assert h.hexdigest() == plain.hexdigest()
    h.close()
