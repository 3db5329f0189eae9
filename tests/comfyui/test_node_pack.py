"""The node pack in a real ComfyUI: the next prompt after a promote runs with the new version's weights,
after a rollback with the old ones, with nothing changed nothing is reloaded; the stock LoraLoader
follows too with `sync --comfyui-url`; each file of an A14B pair lands on its own expert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from cli.main import app
from registry.backends.local import Wanlora
from registry.sync.comfyui import sync_comfyui
from tests.comfyui.conftest import TINY_WAN, Comfy, unique
from tests.helpers import make, register

pytestmark = pytest.mark.xdist_group("comfyui")  # one ComfyUI server per session: these tests share a worker
KEY = "diffusion_model.blocks.0.self_attn.q"


def expected_delta(path: Path, strength: float = 1.0) -> float:
    """sum(strength · alpha/rank · B @ A) of the probed module, from the file itself."""
    sd = load_file(str(path))
    a = sd[f"{KEY}.lora_A.weight"].astype(np.float64)
    b = sd[f"{KEY}.lora_B.weight"].astype(np.float64)
    alpha = float(sd[f"{KEY}.alpha"])
    return float((b @ a).sum() * alpha / a.shape[0] * strength)


def sync(wl: Wanlora, comfy: Comfy) -> None:
    with wl.registry(write=False) as reg:
        targets = reg.current_targets()
    sync_comfyui(targets, wl.store, comfy.root)


def node_graph(lora: str, *, pin: str = "", pair: bool = False) -> dict[str, Any]:
    graph: dict[str, Any] = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_WAN, "weight_dtype": "default"}},
        "2": {
            "class_type": "WanloraLoraLoader",
            "inputs": {"model": ["1", 0], "lora": lora, "use_recommended": False, "strength": 1.0, "pin_version": pin},
        },
        "3": {"class_type": "WanloraProbe", "inputs": {"model": ["2", 0], "key": f"{KEY}.weight"}},
    }
    if pair:
        graph["2"]["inputs"]["model_low_noise"] = ["1", 0]
        graph["4"] = {"class_type": "WanloraProbe", "inputs": {"model": ["2", 1], "key": f"{KEY}.weight"}}
    return graph


def delta(entry: dict[str, Any], node: str = "3") -> float:
    assert entry["status"]["status_str"] == "success", entry["status"]
    return float(entry["outputs"][node]["delta"][0])


def cached_nodes(entry: dict[str, Any]) -> set[str]:
    return {n for kind, data in entry["status"]["messages"] if kind == "execution_cached" for n in data["nodes"]}


def files(wl: Wanlora, lora: str, version: str) -> dict[str, Path]:
    with wl.registry(write=False) as reg:
        v = reg.get_version(project="default", name=lora, version=version)
    return {f.role.value: Path(wl.store.path(f.sha256)) for f in v.files}  # type: ignore[attr-defined]


def test_the_managed_loader_follows_promote_and_rollback_without_a_restart(
    wl: Wanlora, tmp_path: Path, comfyui: Comfy
) -> None:
    name = unique("hero")
    for i, v in enumerate(("1.0.0", "1.1.0")):
        register(wl, tmp_path, lora=name, version=v, seed=i, file=make(tmp_path, f"{name}{i}", seed=i, base_model="wan-tiny-comfy", blocks=1), base_model="wan-tiny-comfy")  # fmt: skip
    old, new = (expected_delta(files(wl, name, v)["single"]) for v in ("1.0.0", "1.1.0"))
    assert abs(old - new) > 1e-3
    with wl.registry() as reg:
        reg.promote(project="default", name=name, version="1.0.0")
    sync(wl, comfyui)
    graph = node_graph(f"default/character/{name}")
    first = comfyui.run(graph)
    assert delta(first) == pytest.approx(old, rel=1e-3, abs=1e-4)
    assert f"default/character/{name}@1.0.0" in first["outputs"]["2"]["text"][0]  # the UI shows the version
    again = comfyui.run(graph)  # nothing changed: ComfyUI's cache serves it, nothing is loaded again
    assert {"1", "2", "3"} <= cached_nodes(again) and delta(again) == pytest.approx(old, rel=1e-3, abs=1e-4)

    with wl.registry() as reg:
        reg.promote(project="default", name=name, version="1.1.0")
    sync(wl, comfyui)  # no restart, no cache clearing: the manifest's digest is the node's cache key
    promoted = comfyui.run(graph)
    assert "2" not in cached_nodes(promoted) and delta(promoted) == pytest.approx(new, rel=1e-3, abs=1e-4)

    with wl.registry() as reg:
        reg.rollback(project="default", name=name, reason="regression")
    sync(wl, comfyui)
    assert delta(comfyui.run(graph)) == pytest.approx(old, rel=1e-3, abs=1e-4)


def test_pinned_and_missing_versions_fail_loudly(wl: Wanlora, tmp_path: Path, comfyui: Comfy) -> None:
    name = unique("pinned")
    register(wl, tmp_path, lora=name, version="1.0.0", seed=3, file=make(tmp_path, name, seed=3, base_model="wan-tiny-comfy", blocks=1), base_model="wan-tiny-comfy")  # fmt: skip
    with wl.registry() as reg:
        reg.promote(project="default", name=name, version="1.0.0")
    with wl.registry(write=False) as reg:
        targets = reg.current_targets()
    sync_comfyui(targets, wl.store, comfyui.root, pin=True)
    expected = expected_delta(files(wl, name, "1.0.0")["single"])
    assert delta(comfyui.run(node_graph(f"default/character/{name}", pin="1.0.0"))) == pytest.approx(expected, rel=1e-3)
    refused = httpx.post(
        f"{comfyui.url}/prompt", json={"prompt": node_graph(f"default/character/{name}", pin="9.9.9")}, timeout=30
    ).json()
    assert "9.9.9 is not on this host" in str(refused)  # shown in ComfyUI's UI, and nothing is queued
    synced = comfyui.loras / "wanlora" / "default" / "character" / f"{name}.safetensors"
    synced.write_bytes(synced.read_bytes()[:-8] + b"tampered")  # changed by hand: never loaded
    failed = comfyui.run(node_graph(f"default/character/{name}"))
    error = next(d for kind, d in failed["status"]["messages"] if kind == "execution_error")
    assert failed["status"]["status_str"] == "error" and "does not match the sha256" in error["exception_message"]
    synced.unlink()
    failed = comfyui.run(node_graph(f"default/character/{name}"))
    error = next(d for kind, d in failed["status"]["messages"] if kind == "execution_error")
    assert "is missing: run `wanlora sync" in error["exception_message"]
    sync_comfyui(targets, wl.store, comfyui.root, pin=False)


def test_the_stock_lora_loader_follows_with_comfyui_url(
    wl: Wanlora, tmp_path: Path, comfyui: Comfy, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique("stock")
    for i, v in enumerate(("1.0.0", "1.1.0")):
        register(wl, tmp_path, lora=name, version=v, seed=10 + i, file=make(tmp_path, f"{name}{i}", seed=10 + i, base_model="wan-tiny-comfy", blocks=1), base_model="wan-tiny-comfy")  # fmt: skip
    old, new = (expected_delta(files(wl, name, v)["single"]) for v in ("1.0.0", "1.1.0"))
    monkeypatch.setenv("WANLORA_DATABASE_URL", wl.db.url)
    monkeypatch.setenv("WANLORA_STORAGE_URL", str(wl.store.root))  # type: ignore[attr-defined]
    monkeypatch.delenv("WANLORA_SERVER", raising=False)
    cli = CliRunner()

    def wanlora(*args: str) -> str:
        result = cli.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    wanlora("promote", name, "1.0.0")
    wanlora("sync", "--comfyui", str(comfyui.root), "--comfyui-url", comfyui.url)
    graph = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_WAN, "weight_dtype": "default"}},
        "2": {
            "class_type": "LoraLoaderModelOnly",
            "inputs": {"model": ["1", 0], "lora_name": f"wanlora/default/character/{name}.safetensors", "strength_model": 1.0},
        },
        "3": {"class_type": "WanloraProbe", "inputs": {"model": ["2", 0], "key": f"{KEY}.weight"}},
    }  # fmt: skip
    assert delta(comfyui.run(graph)) == pytest.approx(old, rel=1e-3, abs=1e-4)
    wanlora("promote", name, "1.1.0")
    out = wanlora("sync", "--comfyui", str(comfyui.root), "--comfyui-url", comfyui.url)
    assert "ComfyUI dropped its caches" in out  # else the stock loader would keep the old weights it holds
    assert delta(comfyui.run(graph)) == pytest.approx(new, rel=1e-3, abs=1e-4)
    wanlora("rollback", name)
    wanlora("sync", "--comfyui", str(comfyui.root), "--comfyui-url", comfyui.url)
    assert delta(comfyui.run(graph)) == pytest.approx(old, rel=1e-3, abs=1e-4)


def test_each_file_of_an_a14b_pair_lands_on_its_own_expert(wl: Wanlora, tmp_path: Path, comfyui: Comfy) -> None:
    name = unique("pair")
    high = make(tmp_path, f"{name}-high", seed=21, base_model="wan-tiny-comfy-a14b", blocks=1)
    low = make(tmp_path, f"{name}-low", seed=22, base_model="wan-tiny-comfy-a14b", blocks=1)
    register(wl, tmp_path, lora=name, version="1.0.0", file=high, low_noise=low, base_model="wan-tiny-comfy-a14b")
    with wl.registry() as reg:
        reg.promote(project="default", name=name, version="1.0.0")
    sync(wl, comfyui)
    stored = files(wl, name, "1.0.0")
    entry = comfyui.run(node_graph(f"default/character/{name}", pair=True))
    assert delta(entry, "3") == pytest.approx(expected_delta(stored["high_noise"]), rel=1e-3, abs=1e-4)
    assert delta(entry, "4") == pytest.approx(expected_delta(stored["low_noise"]), rel=1e-3, abs=1e-4)
    assert abs(delta(entry, "3") - delta(entry, "4")) > 1e-3


def test_the_example_workflow_fits_comfyuis_nodes(comfyui: Comfy) -> None:
    """examples/wan22_a14b_managed_lora.json: every node exists in this ComfyUI with every required input,
    and every choice is one the node offers (the model files, which this host lacks, aside)."""
    import json

    graph = json.loads((Path(__file__).resolve().parents[2] / "examples" / "wan22_a14b_managed_lora.json").read_text())
    info = httpx.get(f"{comfyui.url}/object_info", timeout=30).json()
    files = ("unet_name", "clip_name", "vae_name", "lora")
    for node_id, node in graph.items():
        spec = info[node["class_type"]]["input"]
        for name, (kind, *_) in spec["required"].items():
            assert name in node["inputs"], f"node {node_id} ({node['class_type']}) lacks {name}"
            value = node["inputs"][name]
            if isinstance(kind, list) and not isinstance(value, list) and name not in files:
                assert value in kind, f"node {node_id}: {name}={value!r} is not one of {kind}"
        for name, value in node["inputs"].items():
            assert name in spec["required"] or name in spec.get("optional", {}), f"node {node_id}: unknown {name}"
            if isinstance(value, list):
                assert value[0] in graph, f"node {node_id}: {name} links to a missing node"


def test_the_recommended_strength_is_phase_2s_best(wl: Wanlora, tmp_path: Path, comfyui: Comfy) -> None:
    name = unique("tuned")
    file = make(tmp_path, name, seed=41, base_model="wan-tiny-comfy", blocks=1)
    register(wl, tmp_path, lora=name, version="1.0.0", file=file, base_model="wan-tiny-comfy", scores={"best_strength": 0.5})  # fmt: skip
    with wl.registry() as reg:
        reg.promote(project="default", name=name, version="1.0.0")
    sync(wl, comfyui)
    graph = node_graph(f"default/character/{name}")
    graph["2"]["inputs"]["use_recommended"] = True  # the node's default
    entry = comfyui.run(graph)
    full = expected_delta(files(wl, name, "1.0.0")["single"])
    assert delta(entry) == pytest.approx(0.5 * full, rel=1e-3, abs=1e-4)
    assert "strength 0.5" in entry["outputs"]["2"]["text"][0]
