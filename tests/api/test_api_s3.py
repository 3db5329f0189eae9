"""The API with S3 artifacts: uploads land in the bucket, downloads stream from it or redirect to a
presigned URL."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api import create_app
from registry.backends.local import Wanlora
from registry.db.engine import Database
from registry.settings import Settings
from tests.conftest import NO_GATE, make_s3
from tests.helpers import make


@pytest.mark.parametrize("follow", [False, True], ids=["stored-on-register", "stored-as-it-arrives"])
@pytest.mark.parametrize("presign", [False, True])
def test_register_resolve_download_through_s3(tmp_path: Path, s3_endpoint: str, presign: bool, follow: bool) -> None:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    store = make_s3(s3_endpoint, presign=presign)
    wl = Wanlora(db=db, store=store, actor="server", policy=NO_GATE)
    app = create_app(Settings(home=tmp_path / "home"), wl=wl, deliver_webhooks=False)
    with wl.accounts() as acc:
        token = acc.bootstrap_admin().token  # type: ignore[union-attr]
    client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    data = make(tmp_path, "a", seed=5).read_bytes()
    named = "&lora=x&base_model=wan2.2-ti2v-5b" if follow else ""
    upload = client.post(f"/api/v1/uploads?project=p{named}", content=data).json()
    assert (tmp_path / "home/uploads" / f".{upload['upload_id']}.ingested").exists() == follow
    body = {
        "version": "1.0.0",
        "changelog": "c",
        "file": upload["upload_id"],
        "category": "style",
        "base_model": "wan2.2-ti2v-5b",
    }
    version = client.post("/api/v1/projects/p/loras/x/versions", json=body).json()
    client.post("/api/v1/projects/p/loras/x/versions/1.0.0/promote")
    sha = version["files"][0]["sha256"]
    assert store.exists(sha)
    response = client.get(f"/api/v1/artifacts/{sha}", follow_redirects=False)
    if presign:
        assert response.status_code == 307 and response.headers["location"].startswith(s3_endpoint)
        assert "cache-control" not in response.headers  # the presigned URL expires: not to be kept
        content = httpx.get(response.headers["location"]).content  # straight from the bucket
    else:
        assert response.status_code == 200 and response.headers["etag"] == f'"{sha}"'
        assert response.headers["cache-control"] == "private, max-age=31536000, immutable"
        content = response.content
    assert hashlib.sha256(content).hexdigest() == sha
    store.client.put_object(Bucket=store.bucket, Key=store.key(sha), Body=content[:-8] + b"tampered")
    refused = client.get(f"/api/v1/artifacts/{sha}", follow_redirects=False)  # neither streamed nor presigned
    assert refused.status_code == 500 and refused.json()["error"]["code"] == "corrupt_artifact"
    assert not store.exists(sha)  # set aside in the bucket's quarantine/ until `wanlora repair`
    db.dispose()
