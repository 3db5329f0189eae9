"""A routed upload, through a real server: once the ingest following an upload knows where each tensor
goes, the upload puts those bytes straight into the stored file and keeps only its header and alphas.
Registering it then uses what that ingest stored, or what it refused the file for, and never reads the
upload's holes as the file: where what was stored cannot be used, registering says to upload again."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

import api.routes.files as files
from registry.backends.uploads import KeptUpload, ingest_path, refusal_path, routed_path, sweep_uploads
from registry.blobs.local import LocalStore
from registry.domain.wan import BASE_MODELS
from registry.files.arrival import Arrival
from registry.files.ingest import ingest_lora
from tests.api.conftest import Api
from tests.conftest import BACKENDS
from tests.helpers import PAIR, SINGLE, make

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)

P = "/api/v1/projects/p1"
PIECE = 4096


@pytest.fixture
def live(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[httpx.Client, threading.Event]]:
    """The API served on loopback, its uploads written a few KiB at a time, and an event set once an
    upload's ingest has offered where the tensors go."""
    monkeypatch.setattr(files, "UPLOAD_BATCH", PIECE)
    offered = threading.Event()
    real = Arrival.offer

    def offer(self: Arrival, placer: Any) -> None:
        real(self, placer)
        offered.set()

    monkeypatch.setattr(Arrival, "offer", offer)
    server = uvicorn.Server(uvicorn.Config(api.client.app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client, offered
    server.should_exit = True
    thread.join(10)


def _upload(api: Api, live: tuple[httpx.Client, threading.Event], src: Path) -> dict[str, Any]:
    """Upload ``src`` for sarah: its header first, the rest once the ingest has offered where it goes."""
    client, offered = live
    data = src.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")

    def body() -> Iterator[bytes]:
        yield data[: header + PIECE]  # a whole batch: the server writes it, and its ingest reads the header
        assert offered.wait(10)
        for at in range(header + PIECE, len(data), PIECE):
            yield data[at : at + PIECE]

    response = client.post(
        "/api/v1/uploads",
        params={"project": "p1", "lora": "sarah"},
        content=body(),
        headers={"Authorization": f"Bearer {api.tokens['trainer']}", "Content-Length": str(len(data))},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _register(api: Api, live: tuple[httpx.Client, threading.Event], upload_id: str) -> httpx.Response:
    client, _ = live
    return client.post(f"{P}/loras/sarah/versions", json={"bump": "patch", "changelog": "x", "file": upload_id},
                       headers={"Authorization": f"Bearer {api.tokens['trainer']}"})  # fmt: skip


def _objects(api: Api) -> set[str]:
    return {sha for sha, _, _ in api.wl.store.listing()}


def test_a_routed_upload_is_kept_as_header_and_alphas_and_registers_as_stored(
    api: Api, live: tuple[httpx.Client, threading.Event], tmp_path: Path
) -> None:
    src = make(tmp_path, "routed", seed=91)
    expected = ingest_lora(src, LocalStore(tmp_path / "reference"), base=BASE_MODELS[SINGLE])
    up = _upload(api, live, src)
    upload = api.home / "uploads" / up["upload_id"]
    assert up["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert not upload.exists() and routed_path(upload).is_file()  # never under its id: it has holes
    assert routed_path(upload).stat().st_size == src.stat().st_size
    assert routed_path(upload).read_bytes() != src.read_bytes()
    assert expected.sha256 in _objects(api)

    created = _register(api, live, up["upload_id"])
    assert created.status_code == 201, created.text
    (stored,) = created.json()["files"]
    assert (stored["sha256"], stored["source_sha256"]) == (expected.sha256, expected.source_sha256)
    assert (stored["rank"], stored["alpha"]) == (expected.rank, expected.alpha)  # from the kept header and alphas
    assert list((api.home / "uploads").iterdir()) == []
    served = live[0].get(f"/api/v1/artifacts/{expected.sha256}",
                         headers={"Authorization": f"Bearer {api.tokens['admin']}"})  # fmt: skip
    assert hashlib.sha256(served.content).hexdigest() == expected.sha256


@pytest.mark.parametrize("record", ["another base", "another file", "forged", "gone from the store"])
def test_a_routed_upload_whose_stored_file_cannot_be_used_is_refused_not_read_from_its_holes(
    api: Api, live: tuple[httpx.Client, threading.Event], tmp_path: Path, record: str
) -> None:
    src = make(tmp_path, "unusable", seed=92)
    before = _objects(api)
    up = _upload(api, live, src)
    kept = ingest_path(api.home / "uploads" / up["upload_id"])
    raw = json.loads(kept.read_text())
    if record == "another base":
        kept.write_text(json.dumps({**raw, "base_model": PAIR}))
    elif record == "another file":
        kept.write_text(json.dumps({**raw, "identity": [0, 0, 0, 0, 0]}))
    elif record == "forged":
        kept.write_text(json.dumps({**raw, "sha256": "../../etc/passwd"}))
    else:
        api.wl.store.delete(raw["sha256"])
    refused = _register(api, live, up["upload_id"])
    assert refused.status_code in (400, 422), refused.text
    error = refused.json()["error"]
    assert "cannot be registered" in error["message"] and "upload the file again" in error["hint"], error
    assert list((api.home / "uploads").iterdir()) == []  # used once, as any upload
    assert raw["sha256"] not in {v["sha256"] for v in _versions(api)}
    if record == "gone from the store":
        assert _objects(api) == before


def _versions(api: Api) -> list[dict[str, Any]]:
    with api.wl.registry(write=False) as reg:
        return [f.model_dump() for v in reg.get_lora(project="p1", name="sarah").versions for f in v.files]


def test_a_routed_upload_ingest_refused_is_refused_by_registering_it_with_the_same_reason(
    api: Api, live: tuple[httpx.Client, threading.Event], tmp_path: Path
) -> None:
    before = _objects(api)
    up = _upload(api, live, make(tmp_path, "poisoned", poison="nan"))
    upload = api.home / "uploads" / up["upload_id"]
    assert refusal_path(upload).is_file() and not ingest_path(upload).exists()
    refused = _register(api, live, up["upload_id"])
    assert refused.status_code == 422 and "NaN" in refused.json()["error"]["message"], refused.text
    assert _objects(api) == before and list((api.home / "uploads").iterdir()) == []


def test_a_routed_upload_nobody_registers_is_swept_with_its_records(
    api: Api, live: tuple[httpx.Client, threading.Event], tmp_path: Path
) -> None:
    up = _upload(api, live, make(tmp_path, "unused", seed=93))
    upload = api.home / "uploads" / up["upload_id"]
    assert KeptUpload.find(upload) is not None
    assert sweep_uploads(api.home / "uploads") == []  # a fresh one stays
    assert sweep_uploads(api.home / "uploads", older_than=-1) == [up["upload_id"]]
    assert list((api.home / "uploads").iterdir()) == [] and KeptUpload.find(upload) is None
