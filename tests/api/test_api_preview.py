"""The phase 2 preview over HTTP: served to whoever may pull the version's files, and read by the
remote backend as the host's sync does."""

from __future__ import annotations

import base64

import pytest

from registry.backends.remote import RemoteWanlora
from registry.domain.eval_schemas import EvaluationIn
from tests.api.conftest import Api
from tests.conftest import BACKENDS
from tests.registry.test_sync_sidecars import tiny_png

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
PATH = "/api/v1/projects/p1/loras/sarah/versions/{}/preview.png"


def test_preview_is_served_like_the_versions_files(api: Api) -> None:
    for version, seed in (("1.1.0", 1), ("1.2.0", 2)):
        with api.wl.evaluation() as ev:
            digest = ev.digest(project="p1", name="sarah", version=version)
            ev.record(
                project="p1", name="sarah", version=version,
                result=EvaluationIn(phase="quality", digest=digest, passed=True,
                                    preview_png=base64.b64encode(tiny_png(seed)).decode()),
            )  # fmt: skip
    answer = api.call("production", "GET", PATH.format("1.1.0"))  # 1.1.0 is current
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.content == tiny_png(1)
    assert api.call("production", "GET", PATH.format("1.2.0")).status_code == 404  # testing: hidden
    assert api.call("trainer", "GET", PATH.format("1.2.0")).content == tiny_png(2)
    assert api.call("none", "GET", PATH.format("1.1.0")).status_code == 401
    assert api.call("stranger", "GET", PATH.format("1.1.0")).status_code in (403, 404)
    assert api.call("admin", "GET", PATH.format("1.0.0")).status_code == 404  # no preview recorded
    remote = RemoteWanlora("http://testserver", api.tokens["production"])
    remote.http.client = api.client
    api.client.headers["Authorization"] = f"Bearer {api.tokens['production']}"
    with remote.registry(write=False) as reg:
        (target,) = [t for t in reg.current_targets(project="p1") if t.lora == "sarah"]
        assert target.preview_sha256 is not None
        assert reg.preview(project="p1", name="sarah", version=target.version) == tiny_png(1)
        assert reg.preview(project="p1", name="sarah", version="1.0.0") is None
