"""`wanlora comfyui install` / `uninstall`: the node pack into a ComfyUI's custom_nodes folder."""

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from cli import render
from cli.app import command_group
from registry.domain.errors import Conflict, InvalidInput

comfyui_app = command_group("comfyui", "The ComfyUI node pack: LoRAs that follow the registry while ComfyUI runs.")

PACK = "wanlora"  # the folder name under custom_nodes
MARKER = ".wanlora-node-pack"
ComfyOpt = Annotated[Path, typer.Option("--comfyui", help="The ComfyUI folder (the one with main.py).")]


def pack_source() -> Path:
    spec = importlib.util.find_spec("comfyui_wanlora")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInput(
            "the node pack is not installed with this wanlora", hint="pip install --force-reinstall wanlora"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def custom_nodes(comfyui: Path) -> Path:
    comfyui = comfyui.expanduser()
    if not (comfyui / "main.py").is_file() or not (comfyui / "nodes.py").is_file():
        raise InvalidInput(
            f"{comfyui} is not a ComfyUI folder (no main.py and nodes.py there)",
            hint="pass the folder ComfyUI runs from, e.g. --comfyui ~/ComfyUI",
        )
    return comfyui / "custom_nodes"


@comfyui_app.command("install")
def install(comfyui: ComfyOpt) -> None:
    """Install (or update) the node pack into COMFYUI/custom_nodes/wanlora; restart ComfyUI once after."""
    dest = custom_nodes(comfyui) / PACK
    if dest.exists() and not (dest / MARKER).exists():
        raise Conflict(f"{dest} exists and is not wanlora's node pack", hint="move it aside, then install again")
    dest.parent.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wanlora-pack-", dir=dest.parent))
    try:
        for source in sorted(pack_source().glob("*.py")):
            shutil.copy2(source, staging / source.name)
        (staging / MARKER).write_text(
            "installed by `wanlora comfyui install`; removed by `wanlora comfyui uninstall`\n"
        )
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)  # the pack appears whole or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    render.console.print(f"installed the wanlora nodes into {dest}; restart ComfyUI to load them")


@comfyui_app.command("uninstall")
def uninstall(comfyui: ComfyOpt) -> None:
    """Remove the node pack from COMFYUI/custom_nodes/wanlora (workflows using its nodes then need another loader)."""
    dest = custom_nodes(comfyui) / PACK
    if not dest.exists():
        render.console.print(f"no wanlora node pack in {dest.parent}: nothing to remove")
        return
    if not (dest / MARKER).exists():
        raise Conflict(f"{dest} is not wanlora's node pack, so it is left alone")
    shutil.rmtree(dest)
    render.console.print(f"removed {dest}; restart ComfyUI")
