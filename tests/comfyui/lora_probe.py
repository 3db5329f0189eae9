"""ComfyUI's own LoRA loading, in-process, as a worker for the format-conformance tests.

``python lora_probe.py COMFYUI_DIR`` reads one JSON request per line on stdin and answers one JSON line:

- ``{"op": "load", "file": PATH, "model": {WanModel kwargs}}``: builds ComfyUI's ``WanModel`` with those
  sizes on the meta device (the real 14B layout costs no memory; once per size), makes ComfyUI's key map
  (``comfy.lora.model_lora_keys_unet``), reads the file with ``comfy.utils.load_torch_file``, converts it
  (``comfy.lora_convert.convert_lora``) and loads it (``comfy.lora.load_lora``). Answers the keys ComfyUI
  left unloaded (its "lora key not loaded" warnings) and the model weights it patches.
- ``{"op": "delta", "key": WEIGHT, "out": PATH}``: ``comfy.lora.calculate_weight`` of the loaded patches at
  strength 1 on a zero weight of that shape, saved as float32 ``.npy`` at PATH.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from launch import _torchvision_stand_in


class _Unloaded(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.keys: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("lora key not loaded: "):
            self.keys.append(message.removeprefix("lora key not loaded: "))


def main() -> None:
    comfy_dir = sys.argv[1]
    _torchvision_stand_in()
    sys.path.insert(0, comfy_dir)
    os.chdir(comfy_dir)
    sys.argv = ["comfy", "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.lora
    import comfy.lora_convert
    import comfy.ops
    import comfy.utils
    import numpy as np
    import torch
    from comfy.ldm.wan.model import WanModel

    unloaded = _Unloaded()
    logging.getLogger().addHandler(unloaded)
    shapes: dict[str, torch.Size] = {}
    patches: dict[str, object] = {}
    models: dict[str, tuple[dict[str, str], dict[str, torch.Size]]] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "load":
            kind = json.dumps(request["model"], sort_keys=True)
            if kind not in models:
                model = types.SimpleNamespace()  # what model_lora_keys_unet reads: state_dict() and model_config
                wan = WanModel(
                    **request["model"], device=torch.device("meta"), operations=comfy.ops.disable_weight_init
                )
                state = {f"diffusion_model.{k}": v for k, v in wan.state_dict().items()}
                model.state_dict = lambda state=state: state
                model.model_config = types.SimpleNamespace(unet_config={})
                models[kind] = (comfy.lora.model_lora_keys_unet(model, {}), {k: v.shape for k, v in state.items()})
            key_map, shapes = models[kind]
            lora = comfy.lora_convert.convert_lora(comfy.utils.load_torch_file(request["file"], safe_load=True))
            unloaded.keys.clear()
            patches = comfy.lora.load_lora(lora, key_map)
            answer = {"unloaded": list(unloaded.keys), "patched": sorted(patches)}
        else:
            key = request["key"]
            weight = torch.zeros(shapes[key], dtype=torch.float32)
            delta = comfy.lora.calculate_weight([(1.0, patches[key], 1.0, None, None)], weight, key)
            np.save(request["out"], delta.numpy())
            answer = {"shape": list(delta.shape)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
