"""Registry benchmarks (issue 2). Every figure is printed as a ratio against a reference measured in the
same run, on the same machine, with the same files.

    .venv/bin/python benchmarks/bench_registry.py            # all three
    .venv/bin/python benchmarks/bench_registry.py --size-gb 1 --loras 1000 --rounds 10

1. register and sync of a ~1 GB LoRA vs `cp` + `sha256sum` of the same file (target ≥ 0.8× their
   combined speed, peak memory < 200 MB; each measured operation runs in its own process and its peak
   RSS is read from wait4);
2. a sync with nothing changed over N registered current LoRAs (target < 1 s) vs a bare stat of the
   same files;
3. a rollback made visible in a ComfyUI folder watched by `wanlora sync --watch` (target < 1 s) vs one
   direct sync of the same change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry.backends.local import Wanlora  # noqa: E402
from registry.blobs.local import LocalStore  # noqa: E402
from registry.db.engine import Database  # noqa: E402
from registry.domain.register import RegisterRequest  # noqa: E402
from registry.files.synth import synth_lora  # noqa: E402
from registry.sync.comfyui import sync_comfyui  # noqa: E402

BIG_BASE = "wan2.1-t2v-14b"  # one file per version, 14B shapes


def timed_child(argv: list[str], env: dict[str, str] | None = None, *, expect_fail: bool = False) -> tuple[float, int]:
    """Run a command; return (wall seconds, peak RSS in MB) of that one process. It must succeed, or
    with ``expect_fail`` exit with status 2 (bad input).

    Linux carries a parent's RSS high-water mark into a forked child, so the peak is taken through
    GNU time (its child forks from a small process); without it, from wait4, which is an upper bound.
    """
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    with tempfile.NamedTemporaryFile("r") as rss_file:
        cmd = [gnu_time, "-f", "%M", "-o", rss_file.name, *argv] if gnu_time else argv
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code != (2 if expect_fail else 0):
            raise SystemExit(f"{argv[:3]} exited with {code}")
        peak_kb = int(rss_file.read().strip().splitlines()[-1]) if gnu_time else usage.ru_maxrss
    return elapsed, peak_kb // 1024


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from registry.domain.register import RegisterRequest
    from registry.backends.local import Wanlora
    from registry.db.engine import Database
    from registry.blobs.local import LocalStore
    from registry.sync.comfyui import sync_comfyui
    mode, db_url, store_dir, arg, version = sys.argv[1:6]
    wl = Wanlora(db=Database(db_url), store=LocalStore(Path(store_dir)), actor="bench")
    if mode == "register":
        wl.register(RegisterRequest(project="bench", lora="big", file=Path(arg), changelog="bench", version=version,
                                    category="style", base_model="wan2.1-t2v-14b"))
    elif mode == "sync":
        with wl.registry(write=False) as reg:
            targets = reg.current_targets(project="bench")
        sync_comfyui(targets, wl.store, Path(arg))
    """
)


def best_of(n: int, fn) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    runs = [fn() for _ in range(n)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def write_big_lora(work: Path, size_gb: float) -> Path:
    """A valid LoRA of about ``size_gb``: rank 256 fp16 on Wan 2.1 14B attention and FFN (~40 MB a block)."""
    per_block = 256 * 2 * (4 * (5120 + 5120) + 2 * (5120 + 13824))
    blocks = max(1, min(40, round(size_gb * 2**30 / per_block)))
    targets = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "ffn.0", "ffn.2")
    print(f"writing a synthetic LoRA of {blocks} blocks ...", flush=True)
    return synth_lora(work / "big.safetensors", base_model=BIG_BASE, rank=256, blocks=blocks, targets=targets, seed=1)


def bench_big_file(work: Path, size_gb: float, repeats: int) -> dict[str, float]:
    src = write_big_lora(work, size_gb)
    size = src.stat().st_size
    db_url = f"sqlite:///{work / 'bench.db'}"
    Database(db_url).upgrade()
    store = work / "store"
    LocalStore(store)
    py = [sys.executable, "-c", CHILD]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache for everyone

    cp_t, cp_rss = best_of(repeats, lambda: timed_child(["cp", str(src), str(work / "copy.safetensors")]))
    sha_t, sha_rss = best_of(repeats, lambda: timed_child(["sha256sum", str(src)]))
    sync_ref_t, _ = best_of(repeats, lambda: timed_child(["sync"]))
    reg_runs = []
    for i in range(repeats):
        reg_runs.append(timed_child([*py, "register", db_url, str(store), str(src), f"{i + 1}.0.0"], env))
        # the same payload cannot be registered twice: start each repetition on a fresh database
        os.unlink(work / "bench.db")
        for extra in ("bench.db-wal", "bench.db-shm"):
            (work / extra).unlink(missing_ok=True)
        Database(db_url).upgrade()
        shutil.rmtree(store / "sha256")
        (store / "sha256").mkdir()
    reg_t, reg_rss = min(r[0] for r in reg_runs), max(r[1] for r in reg_runs)
    # sync: register once, promote, then copy into a fresh ComfyUI folder each repetition
    timed_child([*py, "register", db_url, str(store), str(src), "1.0.0"], env)
    wl = Wanlora(db=Database(db_url), store=LocalStore(store), actor="bench")
    with wl.registry() as reg:
        reg.promote(project="bench", name="big", version="1.0.0")
    sync_runs = []
    for i in range(repeats):
        comfy = work / f"ComfyUI{i}"
        sync_runs.append(timed_child([*py, "sync", db_url, str(store), str(comfy), ""], env))
        shutil.rmtree(comfy)
    sync_t, sync_rss = min(r[0] for r in sync_runs), max(r[1] for r in sync_runs)
    _, idle_rss = timed_child([sys.executable, "-c", "import registry.backends.local, registry.sync.comfyui"], env)
    ref = cp_t + sha_t
    return {
        "file_mb": size / 2**20,
        "cp_s": cp_t,
        "sha256sum_s": sha_t,
        "register_s": reg_t,
        "sync_s": sync_t,
        "register_speed_vs_cp_plus_sha256sum": ref / reg_t,
        "sync_speed_vs_cp_plus_sha256sum": ref / sync_t,
        "sync_speed_vs_cp_plus_sha256sum_plus_sync": (ref + sync_ref_t) / sync_t,
        "register_peak_rss_mb": reg_rss,
        "sync_peak_rss_mb": sync_rss,
        "python_import_rss_mb": idle_rss,
        "cp_peak_rss_mb": cp_rss,
        "sha256sum_peak_rss_mb": sha_rss,
    }


def bench_noop_sync(work: Path, count: int) -> dict[str, float]:
    db_url = f"sqlite:///{work / 'many.db'}"
    wl = Wanlora(db=Database(db_url), store=LocalStore(work / "many-store"), actor="bench")
    wl.db.upgrade()
    print(f"registering {count} LoRAs ...", flush=True)
    for i in range(count):
        f = synth_lora(
            work / "tiny.safetensors", base_model="wan2.2-ti2v-5b", rank=1, blocks=1, seed=i, targets=("self_attn.q",)
        )
        wl.register(
            RegisterRequest(project="many", lora=f"l{i:04}", file=f, changelog="x", version="1.0.0",
                            category="style", base_model="wan2.2-ti2v-5b")
        )  # fmt: skip
        with wl.registry() as reg:
            reg.promote(project="many", name=f"l{i:04}", version="1.0.0")
    comfy = work / "ComfyMany"

    def run_sync() -> tuple[float, object]:
        start = time.perf_counter()
        with wl.registry(write=False) as reg:
            targets = reg.current_targets()
        report = sync_comfyui(targets, wl.store, comfy)
        return time.perf_counter() - start, report

    first_t, first = run_sync()
    assert len(first.copied) == count  # type: ignore[attr-defined]
    noop = []
    for _ in range(5):
        t, report = run_sync()
        assert not report.copied and len(report.unchanged) == count  # type: ignore[attr-defined]
        noop.append(t)
    files = [p for p in (comfy / "models/loras/wanlora").rglob("*.safetensors")]
    stat_runs = []
    for _ in range(5):
        start = time.perf_counter()
        for p in files:
            p.stat()
        stat_runs.append(time.perf_counter() - start)
    noop_t = statistics.median(noop)
    return {
        "loras": count,
        "first_sync_s": first_t,
        "noop_sync_s": noop_t,
        "noop_vs_first_sync_speedup": first_t / noop_t,
        "noop_sync_vs_bare_stat_of_the_files": noop_t / statistics.median(stat_runs),
    }


def bench_watch(work: Path, rounds: int) -> dict[str, float]:
    home = work / "watch-home"
    env = {**os.environ, "WANLORA_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("WANLORA_DATABASE_URL", None)
    env.pop("WANLORA_STORAGE_URL", None)
    wl = Wanlora(db=Database(f"sqlite:///{home / 'registry.db'}"), store=LocalStore(home / "artifacts"), actor="bench")
    wl.db.upgrade()
    versions = {}
    for i, v in enumerate(("1.0.0", "1.1.0")):
        f = synth_lora(work / f"w{i}.safetensors", base_model="wan2.2-ti2v-5b", rank=16, blocks=4, seed=100 + i)
        out = wl.register(
            RegisterRequest(project="w", lora="hero", file=f, changelog=v, version=v,
                            category="character", base_model="wan2.2-ti2v-5b")
        )  # fmt: skip
        versions[v] = out.files[0].sha256
    with wl.registry() as reg:
        reg.promote(project="w", name="hero", version="1.0.0")
    comfy = work / "ComfyWatch"
    target = comfy / "models/loras/wanlora/w/character/hero.safetensors"
    watcher = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "sync", "--comfyui", str(comfy), "--watch", "--json"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def wait_for(sha: str, limit: float = 10.0) -> float:
        start = time.perf_counter()
        while time.perf_counter() - start < limit:
            try:
                if hashlib.sha256(target.read_bytes()).hexdigest() == sha:
                    return time.perf_counter() - start
            except FileNotFoundError:
                pass
            time.sleep(0.002)
        raise SystemExit("watch did not apply the change in time")

    try:
        wait_for(versions["1.0.0"], 30)
        with wl.registry() as reg:
            reg.promote(project="w", name="hero", version="1.1.0")
        wait_for(versions["1.1.0"])  # warm-up change, not counted
        latencies: list[float] = []
        direct: list[float] = []
        for r in range(rounds):
            f = synth_lora(work / f"r{r}.safetensors", base_model="wan2.2-ti2v-5b", rank=16, blocks=4, seed=200 + r)
            new = (
                wl.register(RegisterRequest(project="w", lora="hero", file=f, changelog="r", version=f"2.{r}.0"))
                .files[0]
                .sha256
            )
            with wl.registry() as reg:
                previous = reg.get_version(project="w", name="hero").files[0].sha256
                reg.promote(project="w", name="hero", version=f"2.{r}.0")
            wait_for(new)
            start = time.perf_counter()
            with wl.registry() as reg:
                reg.rollback(project="w", name="hero", reason="bench")
            latencies.append(time.perf_counter() - start + wait_for(previous))
            # reference: the same change applied by one direct sync call
            d0 = time.perf_counter()
            with wl.registry(write=False) as reg:
                targets = reg.current_targets(project="w")
            sync_comfyui(targets, wl.store, work / f"ComfyDirect{r}")
            direct.append(time.perf_counter() - d0)
    finally:
        watcher.terminate()
        watcher.wait(10)
    lat = sorted(latencies)
    return {
        "rounds": rounds,
        "rollback_visible_median_s": statistics.median(lat),
        "rollback_visible_max_s": lat[-1],
        "watch_latency_vs_direct_sync": statistics.median(lat) / statistics.median(direct),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--loras", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("big", "noop", "watch"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wanlora-bench-", dir=args.work))
    results: dict[str, dict[str, float]] = {}
    try:
        if args.only in (None, "big"):
            results["big_file"] = bench_big_file(work, args.size_gb, args.repeats)
        if args.only in (None, "noop"):
            results["noop_sync"] = bench_noop_sync(work, args.loras)
        if args.only in (None, "watch"):
            results["watch"] = bench_watch(work, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
