"""CLI start-up and the local flow (issue 14, items 1 and 2), each as a ratio against a reference
measured in the same run on the same machine. Every figure is a whole process, start included.

    .venv/bin/python benchmarks/bench_cli.py                  # all
    .venv/bin/python benchmarks/bench_cli.py --loras 1000 --flow-mb 420 --runs 15

1. `wanlora --help`, `wanlora sync --help` and `wanlora inspect FILE` (a read command with no
   database) against `python -c pass` and `python -c "import typer"` (target ≤ 0.25 s);
2. `wanlora sync` with nothing to do over 1,000 current LoRAs (target ≤ 0.35 s) against the first,
   full sync of the same folder and a bare `stat` of its files;
3. register + promote + sync of a ~420 MB LoRA as three `wanlora` processes against two runs of
   `cp` into a new file + `sha256sum` of the file (target ≥ 1.0× their speed).

Runs are interleaved (command, reference, command, …) so that a machine that slows down mid-run slows
both; the figure is the median (for the flow, of few and long repeats, the fastest of each side).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry.backends.local import Wanlora  # noqa: E402
from registry.blobs.local import LocalStore  # noqa: E402
from registry.db.engine import Database  # noqa: E402
from registry.domain.policy import load_policy  # noqa: E402
from registry.domain.register import RegisterRequest  # noqa: E402
from registry.files.synth import synth_lora  # noqa: E402

WANLORA = str(Path(sys.executable).with_name("wanlora"))
PY = sys.executable


def wall(argv: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - start
    if done.returncode not in ok:
        raise SystemExit(f"{argv[:4]} exited with {done.returncode}: {done.stderr.decode()[-2000:]}")
    return took


def interleaved(runs: int, commands: dict[str, tuple[list[str], dict[str, str] | None]]) -> dict[str, float]:
    """The median wall time of each command, the commands taking turns."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for argv, env in commands.values():  # warm the page cache and the bytecode once
        wall(argv, env)
    for _ in range(runs):
        for name, (argv, env) in commands.items():
            times[name].append(wall(argv, env))
    return {name: statistics.median(t) for name, t in times.items()}


def home_env(home: Path) -> dict[str, str]:
    # PYTHONDONTWRITEBYTECODE (set on some build machines) would make every run compile wanlora's own
    # modules again; an installed wanlora has its bytecode cached after the first run.
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WANLORA_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env | {"WANLORA_HOME": str(home), "WANLORA_USER": "bench"}


def open_home(home: Path) -> Wanlora:
    home.mkdir(parents=True, exist_ok=True)
    (home / "policy.toml").write_text("[default]\nrequire = []\n")  # promotion without the gate
    wl = Wanlora(db=Database(f"sqlite:///{home / 'registry.db'}"), store=LocalStore(home / "artifacts"),
                 actor="bench", policy=load_policy(home / "policy.toml"))  # fmt: skip
    wl.db.upgrade()
    return wl


def bench_start(work: Path, runs: int) -> dict[str, float]:
    lora = synth_lora(work / "small.safetensors", base_model="wan2.2-ti2v-5b", rank=4, blocks=2, seed=3)
    env = home_env(work / "start-home")
    t = interleaved(runs, {
        "python": ([PY, "-c", "pass"], None),
        "python_import_typer": ([PY, "-c", "import typer, rich.console"], None),
        "help": ([WANLORA, "--help"], env),
        "sync_help": ([WANLORA, "sync", "--help"], env),
        "inspect": ([WANLORA, "inspect", str(lora), "--json"], env),
    })  # fmt: skip
    return {
        "python_s": t["python"],
        "python_import_typer_s": t["python_import_typer"],
        "help_s": t["help"],
        "sync_help_s": t["sync_help"],
        "inspect_s": t["inspect"],
        "help_vs_import_typer": t["help"] / t["python_import_typer"],
        "inspect_vs_import_typer": t["inspect"] / t["python_import_typer"],
    }


def bench_noop_sync(work: Path, count: int, runs: int) -> dict[str, float]:
    home = work / "many-home"
    wl = open_home(home)
    print(f"registering and promoting {count} LoRAs ...", file=sys.stderr, flush=True)
    for i in range(count):
        f = synth_lora(work / "tiny.safetensors", base_model="wan2.2-ti2v-5b", rank=1, blocks=1, seed=i,
                       targets=("self_attn.q",))  # fmt: skip
        wl.register(RegisterRequest(project="many", lora=f"l{i:04}", file=f, changelog="x", version="1.0.0",
                                    category="style", base_model="wan2.2-ti2v-5b"))  # fmt: skip
        with wl.registry() as reg:
            reg.promote(project="many", name=f"l{i:04}", version="1.0.0")
    wl.close()
    env = home_env(home)
    comfy = work / "ComfyMany"
    sync = [WANLORA, "sync", "--comfyui", str(comfy), "--create", "--json"]
    first = wall(sync, env)
    out = subprocess.run(sync, env=env, capture_output=True, check=True)
    report = json.loads(out.stdout)
    assert len(report["unchanged"]) == count and report["fast"], "the second sync did not take the fast path"
    files = [str(p) for p in (comfy / "models/loras/wanlora").rglob("*") if p.is_file()]
    script = work / "stat_files.py"
    script.write_text(f"import os\nfor p in {files!r}:\n    os.stat(p)\n")
    t = interleaved(
        runs, {"noop": (sync, env), "python": ([PY, "-c", "pass"], None), "stat": ([PY, str(script)], None)}
    )
    return {
        "loras": count,
        "first_sync_s": first,
        "noop_sync_s": t["noop"],
        "python_s": t["python"],
        "python_stat_of_the_files_s": t["stat"],
        "noop_vs_first_sync_speedup": first / t["noop"],
        "noop_vs_python_stat_of_the_files": t["noop"] / t["stat"],
    }


def bench_flow(work: Path, size_mb: int, repeats: int) -> dict[str, float]:
    per_block = 256 * 2 * (4 * (5120 + 5120) + 2 * (5120 + 13824))
    blocks = max(1, min(40, round(size_mb * 2**20 / per_block)))
    src = synth_lora(work / "flow.safetensors", base_model="wan2.1-t2v-14b", rank=256, blocks=blocks, seed=7,
                     targets=("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "ffn.0", "ffn.2"))  # fmt: skip
    size = src.stat().st_size
    subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)
    refs, flows = [], []
    for i in range(repeats):
        # Each side starts with the other's written pages on disk: otherwise whichever runs second pays
        # for the first one's writeback (the kernel throttles a writer while dirty pages drain).
        # Like the flow (the store's file, then ComfyUI's), the reference writes two new files and keeps
        # them until it is done; each side's files are deleted before the other side runs, so that both
        # write into memory the kernel just freed (on a VM, a write into memory the guest never touched
        # costs up to 10x one into pages freed a moment before, and overwriting one file twice is the latter).
        os.sync()
        copies = [work / f"flow-copy-{k}.safetensors" for k in range(2)]
        start = time.perf_counter()
        for copy in copies:
            wall(["cp", str(src), str(copy)])
            wall(["sha256sum", str(src)])
        refs.append(time.perf_counter() - start)
        for copy in copies:
            copy.unlink()
        home = work / f"flow-home-{i}"
        open_home(home).close()
        env = home_env(home)
        comfy = work / f"ComfyFlow{i}"
        os.sync()
        start = time.perf_counter()
        steps = (
            wall([WANLORA, "register", str(src), "--lora", "hero", "-p", "flow", "--category", "character",
                  "--base-model", "wan2.1-t2v-14b", "--version", "1.0.0", "-m", "bench", "-q"], env),
            wall([WANLORA, "promote", "hero", "1.0.0", "-p", "flow"], env),
            wall([WANLORA, "sync", "--comfyui", str(comfy), "--create"], env),
        )  # fmt: skip
        flows.append(time.perf_counter() - start)
        print(f"flow {i + 1}: reference {refs[-1]:.2f} s; register {steps[0]:.2f}, promote {steps[1]:.2f}, "
              f"sync {steps[2]:.2f} s", file=sys.stderr, flush=True)  # fmt: skip
        shutil.rmtree(home)
        shutil.rmtree(comfy)
    ref, flow = min(refs), min(flows)
    return {
        "file_mb": size / 2**20,
        "two_cp_plus_sha256sum_s": ref,
        "register_promote_sync_s": flow,
        "flow_speed_vs_two_cp_plus_sha256sum": ref / flow,
    }


def machine() -> dict[str, object]:
    """What ran the benchmark, and its pace at the time: this VM's pace moves from one boot to the next,
    which the ratios absorb but the absolute targets (0.25 s, 0.35 s) do not."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    loop = timeit.Timer("sum(range(10**6))").repeat(5, 5)
    return {
        "cpus": os.cpu_count() or 0,
        "cpu": model,
        "python": sys.version.split()[0],
        "sum_range_1e6_ms": min(loop) / 5 * 1000,  # `python -m timeit "sum(range(10**6))"`
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--loras", type=int, default=1000)
    parser.add_argument("--flow-mb", type=int, default=420)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("start", "noop", "flow"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wanlora-bench-cli-", dir=args.work))
    results: dict[str, dict[str, float]] = {}
    try:
        if args.only in (None, "start"):
            results["start"] = bench_start(work, args.runs)
        if args.only in (None, "noop"):
            results["noop_sync"] = bench_noop_sync(work, args.loras, args.runs)
        if args.only in (None, "flow"):
            results["flow"] = bench_flow(work, args.flow_mb, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"] = machine()  # type: ignore[assignment]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
