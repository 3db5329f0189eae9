"""ComfyUI sync: the current versions a host may see, under stable names in its LoRA folder."""

from registry.sync.comfyui import sync_comfyui, watch_comfyui
from registry.sync.folder import SyncReport, loras_dir

__all__ = ["SyncReport", "loras_dir", "sync_comfyui", "watch_comfyui"]
