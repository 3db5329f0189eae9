"""The CLI against a real server on loopback: every command through --server, sync with a production
token, and `sync --watch` following the server's change feed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from api import create_app
from cli.main import app
from registry.domain.digests import canary
from registry.settings import Settings
from tests.helpers import SINGLE, make

runner = CliRunner()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    application = create_app(Settings(home=tmp_path / "server", webhook_allow_hosts="127.0.0.1"))
    with application.state.wanlora.wl.accounts() as acc:
        token = acc.bootstrap_admin().token  # type: ignore[union-attr]
    config = uvicorn.Config(application, host="127.0.0.1", port=0, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.01)
    port = srv.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("WANLORA_SERVER", url)
    monkeypatch.setenv("WANLORA_TOKEN", token)
    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "client-home-unused"))
    yield url, token
    srv.should_exit = True
    srv.force_exit = True  # do not wait for parked long polls
    thread.join(10)


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


def test_every_command_through_the_server(
    server: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, admin = server
    base = ["--lora", "sarah", "-p", "brandx", "--category", "character", "--base-model", SINGLE, "-q"]
    hp = tmp_path / "hp.json"
    hp.write_text('{"learning_rate": 1.5e-4}')
    v1 = json.loads(run("register", str(make(tmp_path, "a", seed=1)), *base, "--version", "1.0.0", "-m", "first",
                        "--hyperparams", str(hp), "--json"))  # fmt: skip
    assert (
        v1["status"] == "testing" and v1["hyperparameters"] == {"learning_rate": 1.5e-4} and v1["created_by"] == "admin"
    )
    run("register", str(make(tmp_path, "b", seed=2)), *base, "--bump", "minor", "-m", "second", "--score", "c=9")
    run("promote", "sarah", "1.0.0", "-p", "brandx", "--reason", "ok")
    run("promote", "sarah", "1.1.0", "-p", "brandx")
    assert json.loads(run("list", "--json"))[0]["current_version"] == "1.1.0"
    assert json.loads(run("show", "sarah@1.1.0", "-p", "brandx", "--json"))["scores"] == {"c": 9.0}
    assert json.loads(run("diff", "sarah", "1.0.0", "1.1.0", "-p", "brandx", "--json"))["scores"]["c"]["new"] == 9.0
    assert "## v1.1.0" in run("notes", "sarah", "-p", "brandx")
    # a same-payload register is refused by the server with the registry's own error
    out = run("register", str(make(tmp_path, "b2", seed=2)), *base, "--bump", "patch", "-m", "dup", code=1)
    assert "AlreadyExists" in out and "sarah@1.1.0" in out
    # users and tokens through the server; a production token syncs ComfyUI
    run("user", "add", "host1")
    prod = json.loads(run("token", "create", "-u", "host1", "-p", "brandx", "-r", "production", "--json"))["token"]
    monkeypatch.setenv("WANLORA_TOKEN", prod)
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "loras").mkdir(parents=True)
    report = json.loads(run("sync", "--comfyui", str(comfy), "--json"))
    assert report["copied"] == ["brandx/character/sarah.safetensors"]
    current = json.loads(run("show", "sarah", "-p", "brandx", "--json"))
    assert [v["version"] for v in current["versions"]] == ["1.1.0"]  # production sees only current
    target = comfy / "models/loras/wanlora/brandx/character/sarah.safetensors"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == current["versions"][0]["files"][0]["sha256"]
    assert "PermissionDenied" in run("rollback", "sarah", "-p", "brandx", code=1)
    assert "runs on the server host" in run("db", "upgrade", code=2)
    monkeypatch.setenv("WANLORA_TOKEN", "wlt_wrong")
    assert "Unauthenticated" in run("list", code=1)
    monkeypatch.setenv("WANLORA_TOKEN", admin)
    assert json.loads(run("history", "sarah", "-p", "brandx", "--json"))[0]["actor"] == "admin"


def test_sync_watch_follows_the_change_feed(server: tuple[str, str], tmp_path: Path) -> None:
    base = ["--lora", "hero", "-p", "studio", "--category", "style", "--base-model", SINGLE, "-q"]
    run("register", str(make(tmp_path, "h1", seed=1)), *base, "--version", "1.0.0", "-m", "a")
    run("register", str(make(tmp_path, "h2", seed=2)), *base, "--version", "1.1.0", "-m", "b")
    run("promote", "hero", "1.0.0", "-p", "studio")
    run("promote", "hero", "1.1.0", "-p", "studio")
    first = json.loads(run("show", "hero@1.0.0", "-p", "studio", "--json"))["files"][0]["sha256"]
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "loras").mkdir(parents=True)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "sync", "--comfyui", str(comfy), "--watch", "--json"],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert watcher.stdout is not None
        assert json.loads(watcher.stdout.readline())["copied"] == ["studio/style/hero.safetensors"]
        time.sleep(0.3)  # the watcher is now parked in a long poll
        started = time.monotonic()
        run("rollback", "hero", "-p", "studio", "--reason", "regression")
        target = comfy / "models/loras/wanlora/studio/style/hero.safetensors"
        while time.monotonic() - started < 5:
            if hashlib.sha256(target.read_bytes()).hexdigest() == first:
                break
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        assert hashlib.sha256(target.read_bytes()).hexdigest() == first
        assert elapsed < 1.0, f"rollback reached the watching host after {elapsed:.2f} s"
    finally:
        watcher.terminate()
        watcher.wait(10)


def test_more_commands_through_the_server(server: tuple[str, str], tmp_path: Path) -> None:
    run("lora", "create", "wc", "-c", "style", "-b", SINGLE, "-t", "wcstyle", "-p", "studio")
    run(
        "register",
        str(make(tmp_path, "w", seed=3)),
        "--lora",
        "wc",
        "-p",
        "studio",
        "--version",
        "0.1.0",
        "-m",
        "x",
        "-q",
    )
    assert json.loads(run("annotate", "wc@0.1.0", "-p", "studio", "--score", "style=9.4", "--json"))["scores"] == {
        "style": 9.4
    }
    hook = json.loads(run("webhook", "add", "http://127.0.0.1:9/h", "--events", "deprecate", "-p", "studio", "--json"))
    assert hook["secret"] and [h["id"] for h in json.loads(run("webhook", "list", "--json"))] == [hook["id"]]
    assert "not delivered: could not connect" in run("webhook", "test", str(hook["id"]), code=1)  # nothing on :9
    assert (
        json.loads(run("deprecate", "wc", "0.1.0", "-p", "studio", "--reason", "no", "--json"))["status"]
        == "deprecated"
    )
    deliveries = json.loads(run("webhook", "deliveries", "--json"))
    assert [d["kind"] for d in deliveries] == ["deprecate"]
    run("webhook", "remove", str(hook["id"]))
    run("user", "add", "tina")
    created = json.loads(
        run("token", "create", "-u", "tina", "-p", "studio", "-r", "trainer", "--expires", "1d", "--json")
    )
    assert any(t["id"] == created["id"] for t in json.loads(run("token", "list", "--json")))
    assert "revoked" in run("token", "revoke", str(created["id"]))


@pytest.mark.gate
def test_evaluation_and_a_trial_through_the_server(
    server: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eval (the GPU box: fetches the files over HTTP, records with a trainer token), a trial, a
    production host's reports and the gate, all through --server."""
    pytest.importorskip("diffusers")
    from registry.files.synth import synth_lora

    f = synth_lora(tmp_path / "t.safetensors", base_model="wan-tiny", fmt="canonical", dtype="F32", scale=0.3)
    run("register", str(f), "--lora", "tiny", "-p", "lab", "--category", "style", "--base-model", "wan-tiny",
        "--version", "1.0.0", "-m", "first", "-q")  # fmt: skip
    out = run("promote", "tiny", "1.0.0", "-p", "lab", code=1)
    assert "GateRefused" in out and "phase 1 (technical) missing" in out
    run("user", "add", "gpu")
    run("user", "add", "host")
    trainer = json.loads(run("token", "create", "-u", "gpu", "-p", "lab", "-r", "trainer", "--json"))["token"]
    host = json.loads(run("token", "create", "-u", "host", "-p", "lab", "-r", "production", "--json"))["token"]
    admin = os.environ["WANLORA_TOKEN"]
    monkeypatch.setenv("WANLORA_TOKEN", trainer)
    done = runner.invoke(app, ["eval", "technical", "tiny@1.0.0", "-p", "lab", "--tiny", "--out", str(tmp_path / "e"),
                               "--json"])  # fmt: skip
    technical = json.loads(done.stdout)["phases"]["technical"]
    assert done.exit_code == (0 if technical["passed"] else 1)  # a check command: 1 when it failed
    assert (
        technical["evaluation_id"] and technical["checks"][2]["name"] == "effect" and technical["checks"][2]["passed"]
    )
    gate = json.loads(run("eval", "status", "tiny@1.0.0", "-p", "lab", "--json", code=1))  # quality, trial missing
    recorded = {p["phase"]: p["state"] for p in gate["phases"]}["technical"]
    assert recorded == ("passed" if technical["passed"] else "failed")  # recorded on the server as it came out
    run("trial", "start", "tiny@1.0.0", "-p", "lab", code=1)  # a trainer may not start trials
    monkeypatch.setenv("WANLORA_TOKEN", host)
    run("report", "tiny@1.0.0", "-p", "lab", "--job", "j1", "--success", code=1)  # not on trial: not served
    monkeypatch.setenv("WANLORA_TOKEN", admin)
    assert json.loads(run("policy", "show", "-p", "lab", "--json"))["trial"]["share"] == 10
    out = run("promote", "tiny", "1.0.0", "-p", "lab", "--override", "--reason", "lab use", "--json")
    assert json.loads(out)["status"] == "current"


def test_a_trial_candidate_reaches_only_the_hosts_in_its_share(
    server: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTP, the candidate's files (and its preview) are served to a host whose id falls in the
    trial's share, and to no other production host (issue 11, item 10)."""
    base = ["--lora", "cand", "-p", "studio", "--category", "style", "--base-model", SINGLE, "-q", "-m", "x"]
    run("register", str(make(tmp_path, "c1", seed=1)), "--version", "1.0.0", *base)
    run("register", str(make(tmp_path, "c2", seed=2)), "--version", "1.1.0", *base)
    run("promote", "cand", "1.0.0", "-p", "studio", "--override", "--reason", "first")
    url, admin = server
    lora = f"{url}/api/v1/projects/studio/loras/cand/versions/1.1.0"
    auth = {"Authorization": f"Bearer {admin}"}
    digest = httpx.get(f"{lora}/digest", headers=auth).json()["digest"]
    for phase in ("technical", "quality"):  # what the GPU box would have recorded
        evidence = {"phase": phase, "digest": digest, "passed": True, "summary": "ok"}
        assert httpx.post(f"{lora}/evaluations", json=evidence, headers=auth).status_code == 200
    trial = json.loads(run("trial", "start", "cand@1.1.0", "-p", "studio", "--share", "50", "--json"))
    inside = next(f"host-{i}" for i in range(1000) if canary(trial["id"], f"host-{i}", 50))
    outside = next(f"host-{i}" for i in range(1000) if not canary(trial["id"], f"host-{i}", 50))
    run("user", "add", "farm")
    prod = json.loads(run("token", "create", "-u", "farm", "-p", "studio", "-r", "production", "--json"))["token"]
    monkeypatch.setenv("WANLORA_TOKEN", prod)
    for host, version in ((inside, "1.1.0"), (outside, "1.0.0")):
        root = tmp_path / host
        (root / "models" / "loras").mkdir(parents=True)
        run("sync", "--comfyui", str(root), "--client-id", host, "--json")
        manifest = json.loads((root / "models/loras/wanlora/.wanlora-manifest.json").read_text())
        assert {e["version"] for e in manifest["files"].values()} == {version}, host
    assert "PermissionDenied" in run("trial", "status", "cand", "-p", "studio", code=1)  # details are not production's


def test_register_through_a_server_does_not_hash_the_file_early(server: tuple[str, str], tmp_path: Path) -> None:
    """The client hashes what it sends while it sends it; the early hash is the embedded registry's."""
    from registry.files.source_digests import early_digests

    src = make(tmp_path, "early", seed=5)
    run("register", str(src), "--lora", "e", "-p", "p", "--category", "style", "--base-model", SINGLE,
        "--version", "1.0.0", "-m", "x", "-q")  # fmt: skip
    assert early_digests(src) is None


def test_register_through_a_server_is_stored_while_it_uploads(
    server: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client names the LoRA and base model on each upload, so the server stores the file as it
    arrives: registering it, a new LoRA or the next version of one, does not read the file again."""
    import registry.backends.local as local

    read_again: list[object] = []
    real = local.ingest_lora
    monkeypatch.setattr(local, "ingest_lora", lambda *a, **k: read_again.append(a) or real(*a, **k))
    run("register", str(make(tmp_path, "s1", seed=1)), "--lora", "s", "-p", "p", "--category", "style",
        "--base-model", SINGLE, "--version", "1.0.0", "-m", "x", "-q")  # fmt: skip
    second = json.loads(run("register", str(make(tmp_path, "s2", seed=2)), "--lora", "s", "-p", "p",
                            "--bump", "minor", "-m", "y", "--json"))  # fmt: skip
    assert read_again == [] and second["version"] == "1.1.0"
    assert second["files"][0]["source_sha256"] == hashlib.sha256(make(tmp_path, "s2", seed=2).read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("args", "message"),
    [(("--lora", "b1.0", "--version", "1.0.0"), "invalid LoRA name"), (("--lora", "s", "--version", "1.0"), "invalid version"),
     (("--lora", "s", "--bump", "huge"), "unknown bump")],
)  # fmt: skip
def test_a_bad_name_or_version_is_refused_before_anything_is_uploaded(
    server: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], message: str
) -> None:
    from registry.backends.remote import RemoteWanlora

    def unsent(*a: object, **k: object) -> str:
        raise AssertionError("the file was uploaded")

    monkeypatch.setattr(RemoteWanlora, "_upload", unsent)
    out = run("register", str(make(tmp_path, "bad", seed=3)), *args, "-p", "p", "--category", "style",
              "--base-model", SINGLE, "-m", "x", "-q", code=2)  # fmt: skip
    assert message in out
