"""Hostile safetensors headers (issue 11): refused fast, in flat memory, locally and on the server.

    .venv/bin/python benchmarks/bench_hostile.py [--header-mb 99] [--uploads 3]

Three hostile files with a header just under the 100 MB cap: ~1.5 M tiny tensor entries, one huge
metadata string, and deep nesting. Locally, `wanlora register` of each runs under GNU time (wall and
peak RSS), against `wanlora --help` (the process alone), and the refusal in-process against
`sha256sum` of the same file (reading it once). On a `wanlora serve`, N concurrent clients upload and register the tiny-entries file
while the server's RSS is sampled from /proc and a health request runs every 50 ms; the references are
the idle server's RSS and health latency, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
from bench_api import WANLORA, Server, _children  # noqa: E402
from bench_registry import timed_child  # noqa: E402


def hostile_files(work: Path, header_mb: float) -> dict[str, Path]:
    size = int(header_mb * 2**20)
    entry = b'"%07d":{},'
    n = (size - 16) // len(entry % 0)
    tiny = b"{" + b"".join(entry % i for i in range(n)) + b'"end":{}}'
    huge_meta = b'{"__metadata__":{"a":"' + b"x" * (size - 32) + b'"}}'
    deep = b'{"a":' + b"[" * ((size - 8) // 2) + b"]" * ((size - 8) // 2) + b"}"
    out = {}
    for name, blob in (("tiny-entries", tiny), ("huge-metadata", huge_meta), ("deep-nesting", deep)):
        path = work / f"{name}.safetensors"
        path.write_bytes(len(blob).to_bytes(8, "little") + blob)
        out[name] = path
    return out


def bench_local(work: Path, files: dict[str, Path]) -> dict[str, float]:
    env = {"WANLORA_HOME": str(work / "home"), "PATH": "/usr/bin:/bin"}
    from registry.domain.errors import InvalidFile
    from registry.files.ingest import inspect_lora

    base_t, base_rss = timed_child([WANLORA, "--help"], env)
    figures: dict[str, float] = {"process_alone_s": base_t, "process_alone_rss_mb": base_rss}
    for name, path in files.items():
        sha_t, _ = timed_child(["sha256sum", str(path)])
        t0 = time.perf_counter()
        try:
            inspect_lora(path)
        except InvalidFile:
            figures[f"{name}_inspect_refused_s"] = time.perf_counter() - t0
        figures[f"{name}_sha256sum_s"] = sha_t
        figures[f"{name}_inspect_vs_sha256sum"] = figures[f"{name}_inspect_refused_s"] / sha_t
        t, rss = timed_child([WANLORA, "register", str(path), "--lora", "h", "-p", "bench", "--category", "style",
                              "--base-model", "wan2.1-t2v-1.3b", "--version", "1.0.0", "-m", "x", "-q"],
                             env, expect_fail=True)  # fmt: skip
        figures[f"{name}_cli_refused_s"] = t
        figures[f"{name}_cli_vs_process_alone"] = t / base_t
        figures[f"{name}_peak_rss_mb"] = rss
    return figures


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _health_latencies(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            client.get(f"{url}/api/v1/health")
            out.append(time.perf_counter() - t0)
            time.sleep(0.05)


def _attack(url: str, token: str, path: Path, i: int, codes: list[int], times: list[tuple[float, float]]) -> None:
    t0 = time.perf_counter()
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=600, headers=auth) as client, open(path, "rb") as fh:
        up = client.post(f"{url}/api/v1/uploads", params={"project": "bench"}, content=fh)
        codes.append(up.status_code)
        if up.status_code != 201:
            return
        t1 = time.perf_counter()
        body = {"file": up.json()["upload_id"], "version": "1.0.0", "changelog": "x", "category": "style",
                "base_model": "wan2.1-t2v-1.3b"}  # fmt: skip
        reg = client.post(f"{url}/api/v1/projects/bench/loras/h{i}/versions", content=json.dumps(body),
                          headers={"Content-Type": "application/json"})  # fmt: skip
        codes.append(reg.status_code)
        times.append((t1 - t0, time.perf_counter() - t1))


def bench_server(work: Path, path: Path, uploads: int) -> dict[str, float]:
    server = Server(work / "server")
    try:
        pid = next(iter(_children(server.proc.pid)))
        idle: list[float] = []
        stop = threading.Event()
        probe = threading.Thread(target=_health_latencies, args=(server.url, stop, idle))
        probe.start()
        time.sleep(1.0)
        stop.set()
        probe.join()
        idle_rss = _rss_mb(pid)
        busy: list[float] = []
        stop = threading.Event()
        probe = threading.Thread(target=_health_latencies, args=(server.url, stop, busy))
        codes: list[int] = []
        times: list[tuple[float, float]] = []
        attackers = [threading.Thread(target=_attack, args=(server.url, server.token, path, i, codes, times))
                     for i in range(uploads)]  # fmt: skip
        peak = idle_rss
        t0 = time.perf_counter()
        probe.start()
        for a in attackers:
            a.start()
        while any(a.is_alive() for a in attackers):
            peak = max(peak, _rss_mb(pid))
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
        stop.set()
        probe.join()
        after_rss = _rss_mb(pid)
    finally:
        server.stop()
    return {
        "concurrent_uploads": uploads,
        "all_refused_s": elapsed,
        "slowest_upload_s": max(t[0] for t in times),
        "slowest_register_refused_s": max(t[1] for t in times),
        "answers": ",".join(str(c) for c in codes),  # type: ignore[dict-item]
        "server_idle_rss_mb": idle_rss,
        "server_peak_rss_mb": peak,
        "server_rss_after_mb": after_rss,
        "health_p50_idle_ms": statistics.median(idle) * 1000,
        "health_max_during_attack_ms": max(busy) * 1000,
        "health_max_vs_idle_p50": max(busy) / statistics.median(idle),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--header-mb", type=float, default=99.0)
    parser.add_argument("--uploads", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = hostile_files(work, args.header_mb)
        result = {"local": bench_local(work, files), "server": bench_server(work, files["tiny-entries"], args.uploads)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
