"""Start a real ComfyUI (``python launch.py COMFYUI_DIR main.py-args…``), headless on the CPU.

The CPU torch wheel used here has no matching torchvision on the registry; ComfyUI imports it at module
level in models unrelated to WAN, so an empty stand-in is put in its place when it is missing. Also
builds the tiny WAN DiT checkpoint ComfyUI's model detection recognises: ``launch.py COMFYUI_DIR
--make-tiny-wan PATH``, from ComfyUI's own WanModel class.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import runpy
import sys
import types


def _torchvision_stand_in() -> None:
    if importlib.util.find_spec("torchvision") is not None:
        return
    package = types.ModuleType("torchvision")
    package.__path__ = []
    package.__spec__ = importlib.machinery.ModuleSpec("torchvision", None, is_package=True)
    transforms = types.ModuleType("torchvision.transforms")
    transforms.__spec__ = importlib.machinery.ModuleSpec("torchvision.transforms", None)
    package.transforms = transforms  # type: ignore[attr-defined]
    sys.modules["torchvision"] = package
    sys.modules["torchvision.transforms"] = transforms


def _make_tiny_wan(path: str) -> None:
    import comfy.ops
    import torch
    from comfy.ldm.wan.model import WanModel
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = WanModel(
        dim=128, ffn_dim=256, num_heads=1, num_layers=1, in_dim=16, out_dim=16, text_dim=4096, freq_dim=256,
        operations=comfy.ops.disable_weight_init,
    )  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.02)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def main() -> None:
    comfy_dir, *args = sys.argv[1:]
    _torchvision_stand_in()
    sys.path.insert(0, comfy_dir)
    os.chdir(comfy_dir)
    if args[:1] == ["--make-tiny-wan"]:
        sys.argv = ["comfy", "--cpu"]
        import comfy.options

        comfy.options.enable_args_parsing()
        _make_tiny_wan(args[1])
        return
    sys.argv = ["main.py", *args]
    runpy.run_path(os.path.join(comfy_dir, "main.py"), run_name="__main__")


if __name__ == "__main__":
    main()
