"""ComfyUI sync: the current versions a host may see, under stable names in its LoRA folder.

The names are imported on first use, so the fast path of a no-op sync (``registry.sync.quick``) loads
nothing else of the package."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SyncReport", "loras_dir", "sync_comfyui", "watch_comfyui"]
_WHERE = {
    "SyncReport": "registry.sync.folder",
    "loras_dir": "registry.sync.folder",
    "sync_comfyui": "registry.sync.comfyui",
    "watch_comfyui": "registry.sync.comfyui",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'registry.sync' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
