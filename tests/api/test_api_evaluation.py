"""The gate, trials and reports through the HTTP API, with each role's rights."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from registry.backends.local import Wanlora
from registry.settings import Settings
from tests.conftest import BACKENDS
from tests.helpers import register

pytestmark = pytest.mark.gate


@pytest.mark.parametrize("database_url", BACKENDS, indirect=True)
def test_gate_trial_and_reports_over_http(tmp_path: Path, database_url: str) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[default]\nrequire = ["technical", "trial"]\n[default.trial]\nmin_reports = 2\nmin_hours = 0\nabort_after = 2\n'
    )
    app = create_app(Settings(home=tmp_path / "home", database_url=database_url, policy_file=policy))
    wl: Wanlora = app.state.wanlora.wl
    register(wl, tmp_path, project="p1", version="1.0.0", seed=0)
    register(wl, tmp_path, project="p1", version="1.1.0", seed=1)
    with wl.registry() as reg:
        reg.promote(project="p1", name="sarah", version="1.0.0", override=True, reason="imported")
    tokens = {}
    with wl.accounts() as acc:
        for role in ("trainer", "production", "admin"):
            acc.add_user(name=role)
            tokens[role] = acc.create_token(user=role, project="p1", role=role).token
    client = TestClient(app)

    def call(who: str, method: str, path: str, **kw: object):  # type: ignore[no-untyped-def]
        return client.request(method, "/api/v1/projects/p1/loras/sarah" + path,
                              headers={"Authorization": f"Bearer {tokens[who]}"}, **kw)  # type: ignore[arg-type]  # fmt: skip

    refused = call("admin", "POST", "/versions/1.1.0/promote", json={})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "gate_refused"
    assert "phase 1 (technical) missing" in refused.json()["error"]["message"]
    assert "quality" not in refused.json()["error"]["message"]  # not required by this policy

    digest = call("trainer", "GET", "/versions/1.1.0/digest").json()["digest"]
    evidence = {"phase": "technical", "digest": digest, "passed": True, "summary": "ok", "scores": {"x": 1.0}}
    assert call("production", "POST", "/versions/1.1.0/evaluations", json=evidence).status_code == 403
    assert (
        call("trainer", "POST", "/versions/1.1.0/evaluations", json={**evidence, "digest": "0" * 64}).status_code == 409
    )
    assert call("trainer", "POST", "/versions/1.1.0/evaluations", json=evidence).status_code == 200

    assert call("production", "POST", "/trial", json={"version": "1.1.0"}).status_code == 403
    assert call("admin", "POST", "/trial", json={"version": "1.1.0", "share": 80}).status_code == 422
    started = call("admin", "POST", "/trial", json={"version": "1.1.0", "share": 50})
    assert started.status_code == 200 and started.json()["baseline"] == "1.0.0"

    picks = [call("production", "GET", "/pick", params={"key": f"job-{i}"}).json() for i in range(40)]
    candidates = [p for p in picks if p["trial"]]
    outside = [p for p in picks if not p["trial"]]
    assert candidates and outside and {p["version"] for p in candidates} == {"1.1.0"}
    sha = candidates[0]["files"][0]["sha256"]
    production = {"Authorization": f"Bearer {tokens['production']}"}
    for key, code in ((candidates[0]["key"], 200), (outside[0]["key"], 404), (None, 404)):
        pulled = client.get(f"/api/v1/artifacts/{sha}", params={"client": key} if key else None, headers=production)
        assert pulled.status_code == code, key  # the candidate is served to its share only while the trial runs
    resolved = client.get("/api/v1/resolve", params={"project": "p1", "client": "host-x"}, headers=production)
    assert resolved.status_code == 200 and resolved.json()[0]["version"] in ("1.0.0", "1.1.0")
    assert call("production", "GET", "/trial").status_code == 403  # the candidate's details are not production's
    assert call("trainer", "GET", "/trial").json()["version"] == "1.1.0"

    refused = call("production", "POST", "/versions/1.1.0/reports", json={"job_id": outside[0]["key"], "success": True})
    assert refused.status_code == 404  # a job that was never given the candidate cannot report on it
    for pick in candidates[:2]:
        answer = call("production", "POST", "/versions/1.1.0/reports", json={"job_id": pick["key"], "success": True,
                                                                             "rating": 9})  # fmt: skip
        assert answer.status_code == 200 and answer.json() is None  # no trial details for production
    assert call("admin", "GET", "/trial").json()["status"] == "passed"
    j0 = candidates[0]["key"]
    duplicate = call("production", "POST", "/versions/1.1.0/reports", json={"job_id": j0, "success": True})
    assert duplicate.status_code == 409
    bad = call("production", "POST", "/versions/1.1.0/reports", json={"job_id": "j9", "success": True, "rating": 11})
    assert bad.status_code in (400, 422)

    gate = call("trainer", "GET", "/versions/1.1.0/gate").json()
    assert gate["ready"] and {p["phase"]: p["state"] for p in gate["phases"]}["quality"] == "not_required"
    assert call("trainer", "POST", "/versions/1.1.0/promote", json={"override": True, "reason": "x"}).status_code == 403
    promoted = call("admin", "POST", "/versions/1.1.0/promote", json={"reason": "passed"})
    assert promoted.status_code == 200 and promoted.json()["status"] == "current"
    metrics = call("production", "GET", "/metrics").json()
    assert {m["version"]: m["reports"] for m in metrics} == {"1.1.0": 2}  # production sees current versions only
    review = client.get("/api/v1/review", headers={"Authorization": f"Bearer {tokens['production']}"})
    assert review.status_code == 200
    assert client.get("/api/v1/review").status_code == 401
