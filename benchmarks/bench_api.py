"""Team-server benchmarks (issue 3). Figures are ratios against references measured in the same run.

    .venv/bin/python benchmarks/bench_api.py transfer --size-gb 1 [--repeats 3]
    .venv/bin/python benchmarks/bench_api.py resolve [--mlflow-python PATH] [--duration 10]

transfer: a ~1 GB LoRA uploaded and registered through the API (`wanlora register` with --server), then
    pulled by `wanlora sync` with a production token; speeds against `cp` + `sha256sum` of the same file
    (rounds interleaved, the fastest of each side), and the server's and the clients' peak memory (GNU
    time), which must not grow with the file.
resolve: requests/s and p99 latency of `GET /api/v1/projects/{p}/resolve?lora=` at 32 connections on
    loopback (wrk), against a stock MLflow server's registered-model alias lookup
    (`GET /api/2.0/mlflow/registered-models/alias`) with its default workers, run side by side. MLflow is
    installed into its own virtual environment by `--setup-mlflow` (it is not a wanlora dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_registry import BIG_BASE, timed_child, write_big_lora  # noqa: E402

from registry.files.synth import synth_lora  # noqa: E402

WANLORA = str(Path(sys.executable).with_name("wanlora"))
GNU_TIME = shutil.which("time") or "/usr/bin/time"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


class Server:
    """`wanlora serve` under GNU time, so that its peak RSS is known when it stops."""

    def __init__(self, home: Path, workers: int | None = None) -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "policy.toml").write_text("[default]\nrequire = []\n")  # promotion without the gate
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rss_file = home / "server-rss"
        self.env = {**os.environ, "WANLORA_HOME": str(home), "PYTHONPATH": str(ROOT)}
        for key in ("WANLORA_DATABASE_URL", "WANLORA_STORAGE_URL", "WANLORA_SERVER", "WANLORA_TOKEN"):
            self.env.pop(key, None)
        self.proc = subprocess.Popen(
            [GNU_TIME, "-f", "%M", "-o", str(self.rss_file), WANLORA, "serve", "--port", str(self.port),
             *(["--workers", str(workers)] if workers else []), "--no-access-log"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.token = ""
        for line in self.proc.stdout:
            if line.startswith("wlt_"):
                self.token = line.strip()
                break
        # keep draining what the server prints, or a full pipe would stall it
        threading.Thread(target=lambda: [None for _ in self.proc.stdout or []], daemon=True).start()
        wait_http(f"{self.url}/api/v1/health")

    def stop(self) -> int:
        # GNU time passes the signal on and writes the peak when its child exits
        for child in _children(self.proc.pid):
            os.kill(child, signal.SIGINT)
        self.proc.wait(30)
        return int(self.rss_file.read_text().split()[-1]) // 1024


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def cli(server: Server, token: str, *args: str) -> tuple[float, int]:
    env = {**server.env, "WANLORA_SERVER": server.url, "WANLORA_TOKEN": token}
    return timed_child([WANLORA, *args], env)


def bench_transfer(work: Path, size_gb: float, repeats: int = 3) -> dict[str, float]:
    """``repeats`` rounds, each side taking its turn (reference, upload + register of a new version,
    then a production sync into a new folder), and the fastest of each: on this VM one write of the
    same gigabyte takes 0.3-3 s depending on whether its memory was touched lately, so one sample of
    each side says more about the VM than about wanlora."""
    src = write_big_lora(work, size_gb)
    size = src.stat().st_size
    subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)
    cps, shas, openssls, ups, downs, up_rss, down_rss = [], [], [], [], [], [], []
    server = Server(work / "server")
    try:
        env = {**server.env, "WANLORA_SERVER": server.url, "WANLORA_TOKEN": server.token}
        out = subprocess.run([WANLORA, "user", "add", "host"], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        out = subprocess.run([WANLORA, "token", "create", "-u", "host", "-p", "*", "-r", "production", "--json"],
                             env=env, capture_output=True, text=True, check=True)  # fmt: skip
        production = json.loads(out.stdout)["token"]
        for i in range(repeats):  # each round a project of its own: its sync pulls that one file
            os.sync()
            copy = work / "copy.safetensors"
            cps.append(timed_child(["cp", str(src), str(copy)])[0])
            shas.append(timed_child(["sha256sum", str(src)])[0])
            # a stricter reference: OpenSSL's sha256 (what hashlib uses) is several times faster than
            # coreutils' on many machines, this one included
            if shutil.which("openssl"):
                openssls.append(timed_child(["openssl", "dgst", "-sha256", str(src)])[0])
            copy.unlink()
            os.sync()
            t, rss = cli(server, server.token, "register", str(src), "--lora", "big", "-p", f"bench{i}",
                         "--category", "style", "--base-model", BIG_BASE, "--version", "1.0.0", "-m", "bench", "-q")  # fmt: skip
            ups.append(t)
            up_rss.append(rss)
            cli(server, server.token, "promote", "big", "1.0.0", "-p", f"bench{i}")
            comfy = work / f"ComfyUI{i}"
            os.sync()
            t, rss = cli(server, production, "sync", "--comfyui", str(comfy), "-p", f"bench{i}", "--create", "--json")
            downs.append(t)
            down_rss.append(rss)
            shutil.rmtree(comfy)  # the next round's sync writes the file anew, as this one did
            print(f"transfer {i + 1}: cp {cps[-1]:.2f} + sha256sum {shas[-1]:.2f} s; upload + register "
                  f"{ups[-1]:.2f} s; sync {downs[-1]:.2f} s", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        server_rss = server.stop()
    refs = [c + h for c, h in zip(cps, shas, strict=True)]
    ref = min(refs)
    openssl_ref = min((c + h for c, h in zip(cps, openssls, strict=False)), default=0.0)
    up_t, down_t = min(ups), min(downs)
    # the median round beside the fastest: a ratio of two minima can flatter either side
    med_ref = statistics.median(refs)
    return {
        "file_mb": size / 2**20,
        "repeats": repeats,
        "cp_plus_sha256sum_s": ref,
        "upload_and_register_s": up_t,
        "download_sync_s": down_t,
        "upload_speed_vs_cp_plus_sha256sum": ref / up_t,
        "download_speed_vs_cp_plus_sha256sum": ref / down_t,
        "median_cp_plus_sha256sum_s": med_ref,
        "median_upload_and_register_s": statistics.median(ups),
        "median_download_sync_s": statistics.median(downs),
        "median_upload_speed_vs_cp_plus_sha256sum": med_ref / statistics.median(ups),
        "median_download_speed_vs_cp_plus_sha256sum": med_ref / statistics.median(downs),
        "cp_plus_openssl_sha256_s": openssl_ref,
        "upload_speed_vs_cp_plus_openssl_sha256": openssl_ref / up_t,
        "download_speed_vs_cp_plus_openssl_sha256": openssl_ref / down_t,
        "server_peak_rss_mb": server_rss,
        "upload_client_peak_rss_mb": max(up_rss),
        "download_client_peak_rss_mb": max(down_rss),
    }


def wrk(url: str, headers: dict[str, str], duration: int, connections: int = 32) -> dict[str, float]:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale, "errors": float(non2xx.group(1)) if non2xx else 0.0}


def mlflow_server(python: Path, work: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    store = work / "mlflow"
    store.mkdir()
    mlflow = python.with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--default-artifact-root", str(store / "art")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", timeout=120)
    return proc, url


def bench_resolve(work: Path, duration: int, mlflow_python: Path | None, workers: int | None) -> dict[str, object]:
    import httpx

    server = Server(work / "server", workers=workers)
    results: dict[str, object] = {"connections": 32, "duration_s": duration, "wanlora_workers": workers or "default"}
    try:
        lora = synth_lora(work / "small.safetensors", base_model="wan2.2-ti2v-5b", rank=8, blocks=2, seed=3)
        env = {**server.env, "WANLORA_SERVER": server.url, "WANLORA_TOKEN": server.token}
        subprocess.run([WANLORA, "register", str(lora), "--lora", "hero", "-p", "bench", "--category", "style",
                        "--base-model", "wan2.2-ti2v-5b", "--version", "1.0.0", "-m", "x", "-q"], env=env, check=True)  # fmt: skip
        subprocess.run([WANLORA, "promote", "hero", "1.0.0", "-p", "bench"], env=env, check=True, capture_output=True)
        subprocess.run([WANLORA, "user", "add", "host"], env=env, check=True, capture_output=True)
        out = subprocess.run([WANLORA, "token", "create", "-u", "host", "-p", "bench", "-r", "production", "--json"],
                             env=env, capture_output=True, text=True, check=True)  # fmt: skip
        token = json.loads(out.stdout)["token"]
        url = f"{server.url}/api/v1/projects/bench/resolve?lora=hero"
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).json()[0]["version"] == "1.0.0"
        wrk(url, {"Authorization": f"Bearer {token}"}, 2)  # warm-up
        results["wanlora"] = wrk(url, {"Authorization": f"Bearer {token}"}, duration)
    finally:
        server.stop()
    if mlflow_python is not None:
        proc, mlflow_url = mlflow_server(mlflow_python, work)
        try:
            api = f"{mlflow_url}/api/2.0/mlflow"
            httpx.post(f"{api}/registered-models/create", json={"name": "hero"}).raise_for_status()
            httpx.post(
                f"{api}/model-versions/create", json={"name": "hero", "source": "s3://bench/hero/1"}
            ).raise_for_status()
            httpx.post(
                f"{api}/registered-models/alias", json={"name": "hero", "alias": "current", "version": "1"}
            ).raise_for_status()
            alias_url = f"{api}/registered-models/alias?name=hero&alias=current"
            assert httpx.get(alias_url).json()["model_version"]["version"] == "1"
            wrk(alias_url, {}, 2)
            results["mlflow"] = wrk(alias_url, {}, duration)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        ours, theirs = results["wanlora"], results["mlflow"]
        assert isinstance(ours, dict) and isinstance(theirs, dict)
        results["rps_vs_mlflow"] = ours["rps"] / theirs["rps"]
        results["p99_vs_mlflow"] = ours["p99_ms"] / theirs["p99_ms"]
    return results


def bench_mixed(work: Path, duration: int, workers: int | None) -> dict[str, object]:
    """Reads at 64 connections (wrk on resolve) while writers register and promote through the API."""
    import httpx

    server = Server(work / "server", workers=workers)
    results: dict[str, object] = {"connections": 64, "duration_s": duration, "wanlora_workers": workers or "default"}
    try:
        env = {**server.env, "WANLORA_SERVER": server.url, "WANLORA_TOKEN": server.token}
        lora = synth_lora(work / "small.safetensors", base_model="wan2.2-ti2v-5b", rank=8, blocks=2, seed=3)
        subprocess.run([WANLORA, "register", str(lora), "--lora", "hero", "-p", "bench", "--category", "style",
                        "--base-model", "wan2.2-ti2v-5b", "--version", "1.0.0", "-m", "x", "-q"], env=env, check=True)  # fmt: skip
        subprocess.run([WANLORA, "promote", "hero", "1.0.0", "-p", "bench"], env=env, check=True, capture_output=True)
        auth = {"Authorization": f"Bearer {server.token}"}
        url = f"{server.url}/api/v1/projects/bench/resolve?lora=hero"
        wrk(url, auth, 2, connections=64)  # warm-up
        files = [synth_lora(work / f"w{i}.safetensors", base_model="wan2.2-ti2v-5b", rank=8, blocks=2, seed=100 + i)
                 for i in range(200)]  # fmt: skip
        stop = threading.Event()
        writes = {"registered": 0, "promoted": 0, "errors": 0}

        def writer() -> None:
            with httpx.Client(base_url=server.url, headers=auth, timeout=60) as client:
                i = 0
                while not stop.is_set() and i < len(files):
                    version = f"2.{i}.0"
                    up = client.post("/api/v1/uploads", params={"project": "bench"}, content=files[i].read_bytes())
                    reg = up.is_success and client.post(
                        "/api/v1/projects/bench/loras/hero/versions",
                        json={"file": up.json()["upload_id"], "version": version, "changelog": "mixed load"},
                    )
                    promoted = (
                        reg
                        and reg.is_success
                        and client.post(
                            f"/api/v1/projects/bench/loras/hero/versions/{version}/promote", json={"reason": "bench"}
                        )
                    )
                    if not (promoted and promoted.is_success):
                        writes["errors"] += 1
                    else:
                        writes["registered"] += 1
                        writes["promoted"] += 1
                    i += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            results["reads"] = wrk(url, auth, duration, connections=64)
        finally:
            stop.set()
            thread.join(60)
        results["writes"] = writes
        results["writes_per_s"] = writes["promoted"] / duration
    finally:
        server.stop()
    return results


def setup_mlflow(target: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    subprocess.run([str(target / "bin/pip"), "install", "-q", "mlflow>=3,<4"], check=True)
    return target / "bin/python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("transfer", "resolve", "mixed"))
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="transfer: rounds of each side (the fastest counts)")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--workers", type=int, default=None, help="server workers (default: wanlora serve's)")
    parser.add_argument("--mlflow-python", type=Path, default=None, help="python of a venv with mlflow")
    parser.add_argument("--setup-mlflow", type=Path, default=None, help="create that venv here first")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wanlora-bench-api-"))
    try:
        if args.what == "transfer":
            result: dict[str, object] = dict(bench_transfer(work, args.size_gb, args.repeats))
        elif args.what == "mixed":
            result = bench_mixed(work, args.duration, args.workers)
        else:
            mlflow_python = setup_mlflow(args.setup_mlflow) if args.setup_mlflow else args.mlflow_python
            result = bench_resolve(work, args.duration, mlflow_python, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
