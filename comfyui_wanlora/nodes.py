"""The wanlora nodes for ComfyUI. They import only the standard library and ComfyUI's own modules
(``folder_paths``, ``comfy.utils``, ``comfy.sd``); the ComfyUI modules are imported when a node runs."""

from __future__ import annotations

import os
from typing import Any

from .managed import ManagedLora, Manifests, WanloraError

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WanloraLoraLoader"]

_manifests: Manifests | None = None


# How long a load waits for a sync in progress to finish writing its manifest (a large pair takes seconds).
_SETTLE_SECONDS = float(os.environ.get("WANLORA_SETTLE_SECONDS", "30"))


class _Replaced(Exception):
    """A file was replaced while it was being loaded."""


def manifests() -> Manifests:
    """The manifests under every folder ComfyUI knows for LoRAs (``extra_model_paths.yaml`` included)."""
    global _manifests
    import folder_paths  # ComfyUI's

    folders = list(folder_paths.get_folder_paths("loras"))
    if _manifests is None or _manifests.folders != folders:
        _manifests = Manifests(folders)
    return _manifests


def _names() -> list[str]:
    try:
        return manifests().names() or ["(no managed LoRA: run wanlora sync)"]
    except WanloraError as exc:
        return [f"(wanlora: {exc})"]


class WanloraLoraLoader:
    """A LoRA that wanlora manages, by its stable name: the version the registry says this host uses now
    (current, or a trial's candidate for this host), or a pinned one. An A14B pair puts its high-noise
    file on ``model`` and its low-noise file on ``model_low_noise``."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}  # sha256 -> state dict, for the files this node holds

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model; for an A14B pair, the high-noise expert."}),
                "lora": (_names(), {"tooltip": "A LoRA wanlora syncs to this host: project/category/name."}),
                "use_recommended": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Use the version's recommended strength (phase 2's best)."},
                ),
                "strength": (
                    "FLOAT",
                    {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01, "tooltip": "Used when not recommended."},
                ),
                "pin_version": (
                    "STRING",
                    {"default": "", "tooltip": "An exact version (synced with --pin); empty follows the registry."},
                ),
            },
            "optional": {
                "model_low_noise": ("MODEL", {"tooltip": "The low-noise expert, for an A14B pair."}),
            },
        }

    RETURN_TYPES = ("MODEL", "MODEL", "STRING", "STRING")
    RETURN_NAMES = ("model", "model_low_noise", "trigger_words", "version")
    OUTPUT_TOOLTIPS = (
        "The model with the LoRA (the high-noise expert for a pair).",
        "The low-noise expert with its file (for one file: the same as model).",
        "The LoRA's trigger words, comma-separated.",
        "project/category/name@version in use.",
    )
    FUNCTION = "load"
    CATEGORY = "loaders/wanlora"
    DESCRIPTION = "Loads a LoRA managed by wanlora: it follows promotions, rollbacks and trials without a restart."

    @classmethod
    def IS_CHANGED(cls, lora: str, pin_version: str = "", **_: Any) -> str:
        """The cache key: the files' digests from the manifest. A promote, a rollback or a trial switch
        changes it, so the next prompt loads the new weights; otherwise ComfyUI reuses its outputs."""
        try:
            return manifests().resolve(lora, pin_version).fingerprint
        except WanloraError as exc:
            return f"error: {exc}"

    @classmethod
    def VALIDATE_INPUTS(cls, lora: str, pin_version: str = "", **_: Any) -> bool | str:
        try:
            manifests().resolve(lora, pin_version)
        except WanloraError as exc:
            return str(exc)
        return True

    def _state(self, managed: ManagedLora) -> list[Any]:
        import comfy.utils  # ComfyUI's

        wanted = {f.sha256 for f in managed.files}
        self._loaded = {sha: sd for sha, sd in self._loaded.items() if sha in wanted}
        states = []
        for f in managed.files:
            if f.sha256 not in self._loaded:
                before = f.on_disk()
                state = comfy.utils.load_torch_file(str(f.verified()), safe_load=True)
                if f.on_disk() != before:  # replaced while it was read: what was read is not verified
                    raise _Replaced
                self._loaded[f.sha256] = state
            states.append(self._loaded[f.sha256])
        return states

    def load(
        self,
        model: Any,
        lora: str,
        use_recommended: bool,
        strength: float,
        pin_version: str = "",
        model_low_noise: Any = None,
    ) -> dict[str, Any]:
        import comfy.sd  # ComfyUI's

        for _ in range(10):
            managed = manifests().settled(lora, pin_version, timeout=_SETTLE_SECONDS)
            try:
                states = self._state(managed)
                break
            except _Replaced:
                continue  # sync swapped the file in the meantime: take the new one
        else:
            raise WanloraError(f"{lora} keeps changing on disk: is a sync looping?")
        if managed.pair and model_low_noise is None:
            raise WanloraError(f"{lora} is an A14B pair: connect the low-noise MODEL to model_low_noise")
        recommended = managed.info.get("recommended_strength")
        weight = float(recommended) if use_recommended and isinstance(recommended, (int, float)) else float(strength)
        high = comfy.sd.load_lora_for_models(model, None, states[0], weight, 0)[0]
        if managed.pair:
            low = comfy.sd.load_lora_for_models(model_low_noise, None, states[1], weight, 0)[0]
        else:
            low = high if model_low_noise is None else model_low_noise
        status = "trial candidate" if managed.info.get("trial") else managed.info.get("status", "")
        label = f"{managed.name}@{managed.version}"
        used = [
            {"lora": managed.name, "version": managed.version, "role": f.role, "sha256": f.sha256}
            for f in managed.files
        ]
        triggers = ", ".join(str(w) for w in managed.info.get("trigger_words", []))
        return {
            "ui": {"text": [f"{label} {status} · strength {weight:g}".strip()], "wanlora": used},
            "result": (high, low, triggers, label),
        }


NODE_CLASS_MAPPINGS = {"WanloraLoraLoader": WanloraLoraLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"WanloraLoraLoader": "wanlora LoRA (managed)"}
