"""An upload that names its LoRA (or its base model) is inspected, checked and stored while it arrives,
so that registering it is a transaction; what that stored counts only for the very file and base model
it was made of, and a refused upload or registration leaves nothing in the store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import registry.backends.local as local
from registry.backends.uploads import UploadIngest, ingest_path
from registry.blobs.local import LocalStore
from registry.domain.wan import BASE_MODELS
from registry.files.ingest import IngestedFile, ingest_lora
from tests.api.conftest import Api
from tests.conftest import BACKENDS
from tests.helpers import PAIR, SINGLE, make

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)

P = "/api/v1/projects/p1"
UP = "/api/v1/uploads?project=p1"
FIELDS = ("sha256", "payload_sha256", "size", "source_sha256", "source_autov3", "rank", "alpha", "dtype")


def _expected(src: Path, tmp_path: Path) -> IngestedFile:
    return ingest_lora(src, LocalStore(tmp_path / "reference"), base=BASE_MODELS[SINGLE])


def _objects(api: Api) -> set[str]:
    return {sha for sha, _, _ in api.wl.store.listing()}


@pytest.fixture
def ingests(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files registering ingests itself (the real ingest runs; each call is noted)."""
    calls: list[Path] = []
    real = local.ingest_lora

    def noted(path: Path, *args: Any, **kw: Any) -> IngestedFile:
        calls.append(Path(path))
        return real(path, *args, **kw)

    monkeypatch.setattr(local, "ingest_lora", noted)
    return calls


@pytest.mark.parametrize("named", ["lora", "base_model"])
def test_an_upload_is_stored_as_it_arrives_and_registering_it_reads_it_no_more(
    api: Api, tmp_path: Path, ingests: list[Path], named: str
) -> None:
    src = make(tmp_path, "arriving", seed=81)
    expected = _expected(src, tmp_path)
    lora, query = ("sarah", "&lora=sarah") if named == "lora" else ("fresh", f"&lora=fresh&base_model={SINGLE}")
    up = api.call("trainer", "POST", UP + query, content=src.read_bytes())
    assert up.status_code == 201, up.text
    upload = api.home / "uploads" / up.json()["upload_id"]
    record = UploadIngest.read(ingest_path(upload))
    assert record is not None and record.base_model == SINGLE and record.sha256 == expected.sha256
    assert expected.sha256 in _objects(api)  # stored before anything was registered

    body: dict[str, Any] = {"version": "2.0.0", "changelog": "as it arrived", "file": up.json()["upload_id"]}
    if named == "base_model":
        body |= {"category": "style", "base_model": SINGLE}
    created = api.call("trainer", "POST", f"{P}/loras/{lora}/versions", json=body)
    assert created.status_code == 201, created.text
    assert ingests == []  # nothing read again
    (stored,) = created.json()["files"]
    assert {k: stored[k] for k in FIELDS} == {k: getattr(expected, k) for k in FIELDS}
    assert list((api.home / "uploads").iterdir()) == []  # the upload and both records are consumed
    served = api.call("admin", "GET", f"/api/v1/artifacts/{expected.sha256}")
    assert hashlib.sha256(served.content).hexdigest() == expected.sha256


@pytest.mark.parametrize("record", ["another base", "another file", "forged", "gone from the store"])
def test_what_the_upload_stored_counts_only_for_that_file_and_base_model(
    api: Api, tmp_path: Path, ingests: list[Path], record: str
) -> None:
    src = make(tmp_path, "checked", seed=82)
    expected = _expected(src, tmp_path)
    up = api.call("trainer", "POST", f"{UP}&lora=sarah", content=src.read_bytes()).json()
    kept = ingest_path(api.home / "uploads" / up["upload_id"])
    raw = json.loads(kept.read_text())
    if record == "another base":
        kept.write_text(json.dumps({**raw, "base_model": PAIR}))
    elif record == "another file":  # were it trusted, this digest would be the version's
        kept.write_text(json.dumps({**raw, "identity": [0, 0, 0, 0, 0]}))
    elif record == "forged":
        kept.write_text(json.dumps({**raw, "sha256": "../../etc/passwd"}))
    else:
        api.wl.store.delete(expected.sha256)
    created = api.call("trainer", "POST", f"{P}/loras/sarah/versions", json={"bump": "patch", "changelog": "x",
                                                                               "file": up["upload_id"]})  # fmt: skip
    assert created.status_code == 201, created.text
    assert len(ingests) == 1  # registering ingested the file itself
    (stored,) = created.json()["files"]
    assert {k: stored[k] for k in FIELDS} == {k: getattr(expected, k) for k in FIELDS}
    assert api.wl.store.exists(expected.sha256)


def test_a_refused_upload_or_registration_leaves_nothing_in_the_store(api: Api, tmp_path: Path) -> None:
    before = _objects(api)
    src = make(tmp_path, "refused", seed=83)
    wrong = api.call("trainer", "POST", f"{UP}&lora=sarah", content=src.read_bytes(),
                     headers={"X-Content-SHA256": "0" * 64})  # fmt: skip
    assert wrong.status_code == 400
    assert _objects(api) == before and list((api.home / "uploads").iterdir()) == []

    up = api.call("trainer", "POST", f"{UP}&lora=sarah", content=src.read_bytes()).json()
    assert len(_objects(api)) == len(before) + 1
    taken = api.call("trainer", "POST", f"{P}/loras/sarah/versions", json={"version": "1.0.0", "changelog": "x",
                                                                             "file": up["upload_id"]})  # fmt: skip
    assert taken.status_code == 409, taken.text
    assert _objects(api) == before and list((api.home / "uploads").iterdir()) == []


def test_a_file_ingest_refuses_as_it_arrives_is_refused_by_registering_it_with_the_same_reason(
    api: Api, tmp_path: Path
) -> None:
    before = _objects(api)
    poisoned = make(tmp_path, "poisoned", poison="nan")
    up = api.call("trainer", "POST", f"{UP}&lora=sarah", content=poisoned.read_bytes())
    assert up.status_code == 201  # the upload itself is fine: the bytes arrived as sent
    assert not ingest_path(api.home / "uploads" / up.json()["upload_id"]).exists()
    assert _objects(api) == before
    refused = api.call("trainer", "POST", f"{P}/loras/sarah/versions", json={"bump": "patch", "changelog": "x",
                                                                               "file": up.json()["upload_id"]})  # fmt: skip
    assert refused.status_code == 422 and "NaN" in refused.json()["error"]["message"]
    assert _objects(api) == before and list((api.home / "uploads").iterdir()) == []


@pytest.mark.parametrize("query", ["&lora=../x", "&lora=" + "a" * 200, "&base_model=" + "b" * 200])
def test_bad_names_on_an_upload_are_refused_before_a_byte_is_kept(api: Api, query: str) -> None:
    response = api.call("trainer", "POST", UP + query, content=b"x")
    assert response.status_code in (400, 422), response.text
    assert list((api.home / "uploads").iterdir()) == []


def test_an_unknown_base_model_or_lora_only_means_registering_stores_the_file(
    api: Api, tmp_path: Path, ingests: list[Path]
) -> None:
    src = make(tmp_path, "unknown", seed=84)
    for query in ("&base_model=wan9-nope", "&lora=nobody"):
        up = api.call("trainer", "POST", UP + query, content=src.read_bytes())
        assert up.status_code == 201, up.text
        assert not ingest_path(api.home / "uploads" / up.json()["upload_id"]).exists()
        (api.home / "uploads" / up.json()["upload_id"]).unlink()


def test_a_disk_that_fills_as_the_records_are_kept_leaves_no_stored_file(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from registry.files.source_digests import SourceDigests

    def full(self: SourceDigests) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SourceDigests, "to_json", full)
    before = _objects(api)
    src = make(tmp_path, "full", seed=85)
    client = TestClient(api.client.app, raise_server_exceptions=False)  # the answer, not the re-raise
    response = client.post(f"{UP}&lora=sarah", content=src.read_bytes(),
                           headers={"Authorization": f"Bearer {api.tokens['trainer']}"})  # fmt: skip
    assert response.status_code == 507 and response.json()["error"]["code"] == "out_of_space", response.text
    assert _objects(api) == before
    assert not list((api.home / "artifacts" / "tmp").iterdir())  # the ingest that followed it stopped
