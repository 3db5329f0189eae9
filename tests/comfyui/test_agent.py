"""Phase 3 from real jobs: the host agent reads a real ComfyUI's /history and its reports make a trial
pass, or abort; reports are idempotent per prompt and wait on disk while the registry is away."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from registry.backends.local import Wanlora
from registry.blobs.local import LocalStore
from registry.db.engine import Database
from registry.domain.digests import canary
from registry.domain.errors import WanloraError
from registry.domain.eval_schemas import ReportIn
from registry.domain.policy import Policy
from registry.sync.agent import ReportAgent
from registry.sync.comfyui import sync_comfyui
from tests.comfyui.conftest import Comfy, unique
from tests.comfyui.test_node_pack import KEY, node_graph
from tests.helpers import make, register

pytestmark = pytest.mark.xdist_group("comfyui")
FAST = {"require": [], "trial": {"min_reports": 3, "min_hours": 0, "abort_after": 3, "max_error_rate": 0.2}}


@pytest.fixture
def trialled(db: Database, store: LocalStore) -> Wanlora:
    return Wanlora(db=db, store=store, actor="tester", policy=Policy(FAST))


def _on_trial(wl: Wanlora, tmp_path: Path, name: str) -> str:
    """1.0.0 current, 1.1.0 on trial for half the hosts; returns a host id in the trial's share."""
    for i, v in enumerate(("1.0.0", "1.1.0")):
        file = make(tmp_path, f"{name}{i}", seed=30 + i, base_model="wan-tiny-comfy", blocks=1)
        register(wl, tmp_path, lora=name, version=v, seed=30 + i, file=file, base_model="wan-tiny-comfy")
    with wl.registry() as reg:
        reg.promote(project="default", name=name, version="1.0.0")
    with wl.evaluation() as ev:
        trial = ev.start_trial(project="default", name=name, version="1.1.0", share=50)
    return next(f"host-{i}" for i in range(1000) if canary(trial.id, f"host-{i}", 50))


def _reporter(wl: Wanlora) -> Any:
    def report(project: str, lora: str, version: str, outcome: ReportIn) -> None:
        with wl.evaluation() as ev:
            ev.report(project=project, name=lora, version=version, outcome=outcome)

    return report


def test_reports_from_real_jobs_make_a_trial_pass_and_count_nothing_twice(
    trialled: Wanlora, tmp_path: Path, comfyui: Comfy, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique("canary")
    host = _on_trial(trialled, tmp_path, name)
    policy = tmp_path / "policy.toml"
    policy.write_text("[default]\nrequire = []\n[default.trial]\nmin_reports = 3\nmin_hours = 0\nabort_after = 3\n")
    monkeypatch.setenv("WANLORA_POLICY_FILE", str(policy))
    monkeypatch.setenv("WANLORA_DATABASE_URL", trialled.db.url)
    monkeypatch.setenv("WANLORA_STORAGE_URL", str(trialled.store.root))  # type: ignore[attr-defined]
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    cli = CliRunner()
    synced = cli.invoke(app, ["sync", "--comfyui", str(comfyui.root), "--client-id", host])
    assert synced.exit_code == 0, synced.output
    graph = node_graph(f"default/character/{name}")
    jobs = [comfyui.run(graph) for _ in range(3)]
    assert all(f"{name}@1.1.0" in j["outputs"]["2"]["text"][0] for j in jobs)  # the host runs the candidate
    out = cli.invoke(
        app, ["sync", "--comfyui", str(comfyui.root), "--client-id", host, "--report-from", comfyui.url, "--json"]
    )
    assert out.exit_code == 0, out.output
    with trialled.evaluation() as ev:
        trial = ev.trial(project="default", name=name)
        metrics = {m.version: m for m in ev.metrics(project="default", name=name)}
    assert trial.status == "passed", trial.verdict
    assert metrics["1.1.0"].reports == 3 and metrics["1.1.0"].failures == 0 and metrics["1.1.0"].seconds is not None
    again = cli.invoke(app, ["sync", "--comfyui", str(comfyui.root), "--client-id", host, "--report-from", comfyui.url])
    assert again.exit_code == 0 and "0 reported" in again.output  # nothing new: nothing sent twice
    fresh = ReportAgent(  # an agent that lost its memory: the registry still counts each prompt once
        comfyui_url=comfyui.url, loras_root=comfyui.loras, report=_reporter(trialled), state_dir=tmp_path / "lost"
    )
    assert fresh.run_once().duplicates >= 3
    with trialled.evaluation() as ev:
        assert {m.version: m for m in ev.metrics(project="default", name=name)}["1.1.0"].reports == 3


def test_failed_jobs_abort_a_trial_and_reports_wait_while_the_registry_is_away(
    trialled: Wanlora, tmp_path: Path, comfyui: Comfy
) -> None:
    name = unique("broken")
    host = _on_trial(trialled, tmp_path, name)
    with trialled.registry(write=False) as reg:
        targets = reg.current_targets(client=host)
    sync_comfyui(targets, trialled.store, comfyui.root)
    graph = node_graph(f"default/character/{name}")
    graph["3"]["inputs"]["key"] = f"{KEY}.no_such_weight"  # the job fails in ComfyUI, after the LoRA loaded
    jobs = [comfyui.run(graph) for _ in range(3)]
    assert all(j["status"]["status_str"] == "error" for j in jobs)

    def away(project: str, lora: str, version: str, outcome: ReportIn) -> None:
        raise WanloraError("cannot reach http://127.0.0.1:9: connection refused")

    state = tmp_path / "agent"
    offline = ReportAgent(
        comfyui_url=comfyui.url, loras_root=comfyui.loras, report=away, state_dir=state, client_id=host
    )
    first = offline.run_once()
    assert first.waiting >= 3 and first.sent == 0 and "cannot reach" in (first.error or "")
    online = ReportAgent(
        comfyui_url=comfyui.url, loras_root=comfyui.loras, report=_reporter(trialled), state_dir=state, client_id=host
    )
    second = online.run_once()  # the outbox on disk goes out now
    assert second.seen == 0 and second.sent >= 3 and second.waiting == 0
    with trialled.evaluation() as ev:
        trial = ev.trial(project="default", name=name)
        reports = {m.version: m for m in ev.metrics(project="default", name=name)}["1.1.0"]
    assert trial.status == "aborted" and "error rate 100.0%" in trial.verdict
    assert reports.failures == 3
