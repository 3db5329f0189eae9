"""ComfyUI follows the registry (issue 10): from `wanlora rollback` on the server to the first ComfyUI
prompt that runs with the old weights, on a host with `wanlora sync --watch --server` and the node pack.

    .venv/bin/python benchmarks/bench_comfyui.py [--rounds 5]

Everything runs on loopback: `wanlora serve` (SQLite), a real ComfyUI (the copy in ../shared/vendor,
headless on the CPU, with ComfyUI's requirements installed: the `dev` extra has them), the host's
`sync --watch`, and prompts through ComfyUI's HTTP API with the tests' probe node, which reads the
weight the LoRA patched. Each round promotes a new version, waits until a prompt runs with it, then
rolls back and submits prompts until one runs with the old weights. The reference, measured in the
same run, is the prompt itself (its execution time in ComfyUI's history): the goal is a latency under
1 s plus the prompt.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from bench_api import WANLORA, Server, free_port, wait_http  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from registry.domain.wan import KeyFormat  # noqa: E402
from registry.files.synth import synth_lora  # noqa: E402

VENDOR = ROOT.parent / "shared" / "vendor" / "comfyui-a125cd84.tar.gz"
LAUNCH = ROOT / "tests" / "comfyui" / "launch.py"
PROBE = ROOT / "tests" / "comfyui" / "probe_node.py"
KEY = "diffusion_model.blocks.0.self_attn.q"


def expected(path: Path) -> float:
    sd = load_file(str(path))
    a, b = sd[f"{KEY}.lora_A.weight"].astype(np.float64), sd[f"{KEY}.lora_B.weight"].astype(np.float64)
    return float((b @ a).sum() * float(sd[f"{KEY}.alpha"]) / a.shape[0])


def comfyui(work: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    import tarfile

    root = work / "ComfyUI"
    root.mkdir()
    with tarfile.open(VENDOR) as archive:
        archive.extractall(root, filter="data")
    launch = [sys.executable, str(LAUNCH), str(root)]
    subprocess.run([*launch, "--make-tiny-wan", str(root / "models/diffusion_models/tiny_wan.safetensors")], check=True)
    subprocess.run([WANLORA, "comfyui", "install", "--comfyui", str(root)], check=True, stdout=subprocess.DEVNULL)
    (root / "custom_nodes/wanlora_probe").mkdir()
    (root / "custom_nodes/wanlora_probe/__init__.py").write_text(PROBE.read_text())
    port = free_port()
    log = open(work / "comfyui.log", "wb")  # noqa: SIM115 - open for the life of the process
    proc = subprocess.Popen(
        [*launch, "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/system_stats", timeout=120)
    return proc, url, root


def run_prompt(url: str, graph: dict[str, object]) -> tuple[float, float]:
    """(the probe's delta, the prompt's execution time in ComfyUI) once the prompt finished."""
    prompt_id = httpx.post(f"{url}/prompt", json={"prompt": graph}, timeout=30).json()["prompt_id"]
    while True:
        entry = httpx.get(f"{url}/history/{prompt_id}", timeout=30).json().get(prompt_id)
        if entry and entry["status"].get("status_str"):
            break
        time.sleep(0.005)
    if entry["status"]["status_str"] != "success":
        raise SystemExit(f"prompt failed: {entry['status']}")
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"]["messages"]}
    seconds = (stamps["execution_success"] - stamps["execution_start"]) / 1000
    return float(entry["outputs"]["3"]["delta"][0]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not VENDOR.exists():
        raise SystemExit(f"no ComfyUI copy at {VENDOR}")
    work = Path(tempfile.mkdtemp(prefix="wanlora-bench-comfyui-"))
    home = work / "server"
    home.mkdir()
    (home / "policy.toml").write_text("[default]\nrequire = []\n")  # the gate is not what is measured here
    server = Server(home)
    env = {
        **server.env,
        "WANLORA_SERVER": server.url,
        "WANLORA_TOKEN": server.token,
        "WANLORA_HOME": str(work / "host"),
    }
    files = [synth_lora(work / f"v{i}.safetensors", base_model="wan-tiny-comfy", blocks=1, seed=i, fmt=KeyFormat.CANONICAL) for i in range(args.rounds + 1)]  # fmt: skip
    for i, path in enumerate(files):
        subprocess.run(
            [WANLORA, "register", str(path), "--lora", "hero", "-c", "style", "-b", "wan-tiny-comfy",
             "--version", f"1.{i}.0", "-m", f"round {i}", "-q"], env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    subprocess.run([WANLORA, "promote", "hero", "1.0.0"], env=env, check=True, stdout=subprocess.DEVNULL)
    proc, url, root = comfyui(work)
    watcher = subprocess.Popen(
        [WANLORA, "sync", "--watch", "--json", "--comfyui", str(root)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert watcher.stdout is not None
    watcher.stdout.readline()  # the first sync is done
    graph = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_wan.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "WanloraLoraLoader", "inputs": {"model": ["1", 0], "lora": "default/style/hero",
              "use_recommended": False, "strength": 1.0, "pin_version": ""}},
        "3": {"class_type": "WanloraProbe", "inputs": {"model": ["2", 0], "key": f"{KEY}.weight"}},
    }  # fmt: skip
    old = expected(files[0])
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30)
    latencies, prompts, tries = [], [], []
    try:
        for i in range(1, args.rounds + 1):
            api.post(
                f"/api/v1/projects/default/loras/hero/versions/1.{i}.0/promote", json={"reason": "bench"}
            ).raise_for_status()
            new = expected(files[i])
            deadline = time.monotonic() + 60
            while abs((got := run_prompt(url, graph)[0]) - new) > 1e-3 * max(1.0, abs(new)):
                if time.monotonic() > deadline:  # the host never got the new version
                    raise SystemExit(f"round {i}: the prompt still shows {got:.5f}, not 1.{i}.0's {new:.5f}")
            started = time.perf_counter()
            api.post("/api/v1/projects/default/loras/hero/rollback", json={"reason": "bench"}).raise_for_status()
            n = 0
            while True:
                n += 1
                got, seconds = run_prompt(url, graph)
                if abs(got - old) <= 1e-3 * max(1.0, abs(old)):
                    break
            latencies.append(time.perf_counter() - started)
            prompts.append(seconds)
            tries.append(n)
    finally:
        watcher.terminate()
        proc.terminate()
        server.stop()
    latency, prompt = statistics.median(latencies), statistics.median(prompts)
    print(f"rollback on the server → first ComfyUI prompt with the old weights, median of {args.rounds}:")
    print(f"  {latency:.3f} s = the prompt itself {prompt:.3f} s + {latency - prompt:.3f} s (goal: < 1 s)")
    print(
        f"  {latency / prompt:.2f}× the prompt's own time; max {max(latencies):.3f} s; prompts submitted per round {tries}"
    )
    print(f"  (loopback, SQLite server, tiny WAN DiT on CPU; {work})")


if __name__ == "__main__":
    main()
