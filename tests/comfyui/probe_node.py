"""A probe node of the tests' own, installed into the test ComfyUI: what a MODEL's LoRA patches do to
one weight, computed by ComfyUI itself (``comfy.lora.calculate_weight``)."""

import comfy.lora


class WanloraProbe:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "key": ("STRING", {"default": "diffusion_model.blocks.0.self_attn.q.weight"}),
            }
        }

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "probe"
    CATEGORY = "testing"

    def probe(self, model, key):
        patches = model.get_key_patches(key)[key]
        original = patches[0][0].float()
        patched = comfy.lora.calculate_weight(patches[1:], original.clone(), key)
        delta = patched - original
        return {"ui": {"delta": [float(delta.sum()), float(delta.abs().sum())], "patches": [len(patches) - 1]}}


NODE_CLASS_MAPPINGS = {"WanloraProbe": WanloraProbe}
