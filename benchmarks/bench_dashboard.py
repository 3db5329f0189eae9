"""Dashboard benchmark (issue 13): server time of the list page and of a version page on a registry of
1,000 LoRAs × 10 versions, p50 and p99, each beside the API's JSON for the same data in the same run.

    .venv/bin/python benchmarks/bench_dashboard.py [--loras 1000] [--versions 10] [--requests 300]
                                                   [--database-url postgresql+psycopg://…]

The registry is real: one LoRA is registered through ``Wanlora.register`` (file ingest, store, events),
then its rows are cloned in bulk (versions with files, two evaluations each and their events, one
current, two deprecated and the rest testing per LoRA). Server time is measured inside the ASGI app
(from the request's arrival to the response's last byte), so the client's own cost is left out. The
goal is p99 under 100 ms for both pages.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from api import create_app  # noqa: E402
from registry.db.tables import Evaluation, Event, Lora, Project, Version, VersionFile  # noqa: E402
from registry.domain.clock import utcnow  # noqa: E402
from registry.domain.register import RegisterRequest  # noqa: E402
from registry.files.synth import synth_lora  # noqa: E402
from registry.settings import Settings  # noqa: E402

BASE = "wan2.2-ti2v-5b"


class ServerTimer:
    """ASGI middleware: seconds from a request's arrival to its response's last body chunk."""

    def __init__(self, app: Any) -> None:
        self.app, self.samples = app, []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        start = time.perf_counter()

        async def timed(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.samples.append(time.perf_counter() - start)

        await self.app(scope, receive, timed)


def _clone(wl: Any, loras: int, versions: int) -> None:
    """1 registered LoRA → ``loras`` × ``versions``, inserted in bulk from the template's rows."""
    with wl.db.session() as s:
        project = s.exec(select(Project).where(Project.name == "studio")).scalars().one()
        template = s.exec(select(VersionFile)).scalars().first()
        base_file = {
            c.name: getattr(template, c.name)
            for c in VersionFile.__table__.columns
            if c.name not in ("id", "version_id")
        }
        now = utcnow()
        categories = ("character", "style", "motion", "domain")
        for start in range(0, loras, 200):
            chunk = range(start + 1, min(loras, start + 200) + 1)  # lora-00000 is the template
            s.execute(insert(Lora), [
                {"project_id": project.id, "name": f"lora-{i:05d}", "category": categories[i % 4], "base_model": BASE,
                 "trigger_words": [f"trig{i}"], "description": f"LoRA number {i}", "created_by": "bench", "created_at": now}
                for i in chunk
            ])  # fmt: skip
            ids = dict(
                s.execute(select(Lora.name, Lora.id).where(Lora.name.in_([f"lora-{i:05d}" for i in chunk]))).all()
            )
            rows = []
            for name, lora_id in ids.items():
                for v in range(versions):
                    status = "current" if v == versions - 2 else "deprecated" if v < 2 else "testing"
                    rows.append({"lora_id": lora_id, "version": f"1.{v}.0", "major": 1, "minor": v, "patch": 0,
                                 "status": status, "changelog": f"{name} 1.{v}.0: more data", "dataset_hash": "d" * 64,
                                 "dataset_summary": {"samples": 100 + v}, "hyperparameters": {"learning_rate": 1e-4, "rank": 32},
                                 "scores": {"consistency": 7 + v / 10}, "created_by": "bench", "created_at": now + timedelta(seconds=v)})  # fmt: skip
            s.execute(insert(Version), rows)
            made = s.execute(
                select(Version.id, Version.lora_id, Version.status).where(Version.lora_id.in_(list(ids.values())))
            ).all()
            s.execute(insert(VersionFile), [{**base_file, "version_id": vid, "sha256": f"{vid:064x}",
                                             "payload_sha256": f"{vid:064x}", "source_sha256": f"{vid:064x}"} for vid, _, _ in made])  # fmt: skip
            s.execute(insert(Evaluation), [
                {"version_id": vid, "phase": phase, "digest": "0" * 64, "passed": True, "summary": phase, "scores": {},
                 "details": {"checks": [{"name": "loads", "passed": True, "detail": "ok"}]}, "created_by": "bench", "created_at": now}
                for vid, _, _ in made for phase in ("technical", "quality")
            ])  # fmt: skip
            seq: dict[int, int] = {}
            events = []
            for vid, lora_id, status in sorted(made):
                for kind in ("registered",) + (("promoted",) if status != "testing" else ()):
                    seq[lora_id] = seq.get(lora_id, 0) + 1
                    events.append({"lora_id": lora_id, "seq": seq[lora_id], "version_id": vid, "kind": kind, "actor": "bench",
                                   "at": now, "details": {}})  # fmt: skip
            s.execute(insert(Event), events)


def measure(client: TestClient, timer: ServerTimer, path: str, n: int) -> dict[str, float]:
    for _ in range(10):
        assert client.get(path).status_code == 200, path
    timer.samples.clear()
    for _ in range(n):
        client.get(path)
    ms = sorted(x * 1000 for x in timer.samples)
    return {"p50_ms": round(statistics.median(ms), 2), "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loras", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "policy.toml").write_text("[default]\nrequire = ['technical', 'quality']\n")
        settings = Settings(home=home / "home", database_url=args.database_url or f"sqlite:///{home / 'r.db'}",
                            policy_file=home / "policy.toml", auth_cache_seconds=60)  # fmt: skip
        app = create_app(settings, deliver_webhooks=False)
        wl = app.state.wanlora.wl
        started = time.perf_counter()
        wl.register(RegisterRequest(project="studio", lora="lora-00000", file=synth_lora(home / "t.safetensors", base_model=BASE),
                                    changelog="template", version="1.0.0", category="style", base_model=BASE))  # fmt: skip
        _clone(wl, args.loras, args.versions)
        with wl.accounts() as acc:
            token = acc.bootstrap_admin(name="bench").token  # type: ignore[union-attr]
        print(
            f"seeded {args.loras} LoRAs × {args.versions} versions in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        timer = ServerTimer(app)
        client = TestClient(timer, base_url="http://127.0.0.1")  # type: ignore[arg-type]
        client.__enter__()  # runs the app's lifespan, as a served app does (its start-up freezes the heap for gc)
        form = client.get("/signin").text
        nonce = form.split('name="nonce" value="')[1].split('"')[0]
        assert client.post("/signin", data={"token": token, "nonce": nonce}, follow_redirects=False).status_code == 303
        mid = f"lora-{args.loras // 2:05d}"
        last = f"1.{args.versions - 1}.0"
        api = {"Authorization": f"Bearer {token}"}
        api_client = TestClient(timer, base_url="http://127.0.0.1", headers=api)  # type: ignore[arg-type]
        figures = {
            "list page (50 of all)": measure(client, timer, "/", args.requests),
            "list page, search + filter": measure(client, timer, f"/?q={mid[:-1]}&status=current", args.requests),
            "list page, page 10": measure(client, timer, "/?page=10", args.requests),
            "version page": measure(client, timer, f"/loras/studio/{mid}/v/{last}", args.requests),
        }
        references = {
            "API GET /loras (JSON, all LoRAs)": measure(
                api_client, timer, "/api/v1/loras", max(20, args.requests // 10)
            ),
            "API GET version (JSON)": measure(
                api_client, timer, f"/api/v1/projects/studio/loras/{mid}/versions/{last}", args.requests
            ),
            "API GET /health": measure(api_client, timer, "/api/v1/health", args.requests),
        }
        client.__exit__(None, None, None)
        wl.close()
    rows = {**figures, **references}
    version_ref = references["API GET version (JSON)"]["p50_ms"]
    list_ref = references["API GET /loras (JSON, all LoRAs)"]["p50_ms"]
    for name, f in figures.items():
        ref = version_ref if name == "version page" else list_ref
        f["p50_vs_reference"] = round(f["p50_ms"] / ref, 2)
        f["goal_p99_under_100ms"] = f["p99_ms"] < 100
    print(f"{'request':36} {'p50 ms':>8} {'p99 ms':>8}  vs reference")
    for name, f in rows.items():
        ratio = f.get("p50_vs_reference")
        print(f"{name:36} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f}  {'' if ratio is None else f'{ratio:.2f}×'}")
    print(json.dumps({"loras": args.loras, "versions": args.versions, "database": "postgresql" if args.database_url else "sqlite",
                      "figures": rows}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
