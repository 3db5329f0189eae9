"""Scale (issue 14, item 4): the registry at 1,000 and at 10,000 LoRAs × 10 versions on PostgreSQL —
`list` (one keyset page, first and deep), `resolve` of one LoRA (a different one each request, so no
cached answer helps) and the registry side of a no-op `sync` (the ETag'd `/api/v1/resolve` answering
304, and the embedded tag query of `registry.sync.quick`), p50 and p99 of server time, and how each
grows from 1,000 to 10,000 (1.0 = flat; 10 = linear).

    .venv/bin/python benchmarks/bench_scale.py [--sizes 1000 10000] [--requests 300]
                                               [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Each size gets a fresh schema of its own in that database, dropped afterwards. The registry is real: one
LoRA goes through ``Wanlora.register``, then its rows are cloned in bulk (benchmarks/bench_dashboard.py).
A no-op sync also `stat`s each synced file; that part is linear in the files a host keeps by nature and
is measured by benchmarks/bench_cli.py.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import psycopg  # noqa: E402
from bench_dashboard import BASE, ServerTimer, _clone  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from api import create_app  # noqa: E402
from registry.domain.register import RegisterRequest  # noqa: E402
from registry.files.synth import synth_lora  # noqa: E402
from registry.settings import Settings  # noqa: E402
from registry.sync import quick  # noqa: E402

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in samples)
    return {"p50_ms": round(statistics.median(ms), 2), "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2)}


def timed(client: TestClient, timer: ServerTimer, paths: list[str], headers: dict[str, str], ok: int = 200) -> dict:
    for path in paths[:10]:
        assert client.get(path, headers=headers).status_code == ok, path
    timer.samples.clear()
    for path in paths:
        answer = client.get(path, headers=headers)
        assert answer.status_code == ok, (path, answer.status_code)
    return percentiles(timer.samples)


def one_size(database_url: str, loras: int, requests: int) -> dict[str, dict[str, float]]:
    schema = f"scale_{uuid.uuid4().hex[:10]}"
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{database_url}?options=-csearch_path%3D{schema}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            (home / "policy.toml").write_text("[default]\nrequire = []\n")
            app = create_app(Settings(home=home / "home", database_url=url, policy_file=home / "policy.toml"),
                             deliver_webhooks=False)  # fmt: skip
            wl = app.state.wanlora.wl
            f = synth_lora(home / "t.safetensors", base_model=BASE, rank=4, blocks=2, seed=1)
            wl.register(RegisterRequest(project="studio", lora="lora-00000", file=f, changelog="x", version="1.0.0",
                                        category="style", base_model=BASE))  # fmt: skip
            with wl.registry() as reg:
                reg.promote(project="studio", name="lora-00000", version="1.0.0")
            print(f"cloning to {loras} LoRAs × 10 versions ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            _clone(wl, loras, 10)
            with wl.db.session() as s:
                s.connection().exec_driver_sql("ANALYZE")
            print(f"  {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            with wl.accounts() as acc:
                token = acc.bootstrap_admin(name="root").token
            timer = ServerTimer(app)
            client = TestClient(timer)  # type: ignore[arg-type]
            client.__enter__()  # the lifespan, as a served app runs it (the change watcher among it)
            auth = {"Authorization": f"Bearer {token}"}
            rng = random.Random(1)
            names = [f"lora-{rng.randrange(1, loras):05d}" for _ in range(requests)]
            out = {
                "list_first_page": timed(client, timer, ["/api/v1/projects/studio/loras?limit=50"] * requests, auth),
                "list_deep_page": timed(
                    client, timer, [f"/api/v1/projects/studio/loras?limit=50&after={n}" for n in names], auth
                ),
                "resolve_one_lora": timed(
                    client, timer, [f"/api/v1/projects/studio/resolve?lora={n}" for n in names], auth
                ),
            }
            etag = client.get("/api/v1/resolve", headers=auth).headers["etag"]
            out["noop_sync_304"] = timed(
                client, timer, ["/api/v1/resolve"] * requests, {**auth, "If-None-Match": etag}, ok=304
            )
            tags = []
            for _ in range(requests):
                t0 = time.perf_counter()
                assert quick.embedded_tag(url) is not None
                tags.append(time.perf_counter() - t0)
            out["noop_sync_embedded_tag"] = percentiles(tags)
            full = []
            for _ in range(5):
                t0 = time.perf_counter()
                with wl.registry(write=False) as reg:
                    n = len(reg.current_targets(project="studio"))
                full.append(time.perf_counter() - t0)
            assert n >= loras
            out["full_sync_targets_all"] = percentiles(full)
            client.__exit__(None, None, None)
            wl.close()
            return out
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 10000])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    args = parser.parse_args()
    small, large = args.sizes
    results = {str(n): one_size(args.database_url, n, args.requests) for n in (small, large)}
    growth = {
        what: {
            "p50_growth": round(
                results[str(large)][what]["p50_ms"] / max(results[str(small)][what]["p50_ms"], 1e-3), 2
            ),
            "p99_growth": round(
                results[str(large)][what]["p99_ms"] / max(results[str(small)][what]["p99_ms"], 1e-3), 2
            ),
        }
        for what in results[str(small)]
    }
    print(json.dumps({"loras": results, f"growth_{small}_to_{large}": growth}, indent=2))


if __name__ == "__main__":
    main()
