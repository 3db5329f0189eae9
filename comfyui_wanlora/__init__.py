"""wanlora's ComfyUI node pack: LoRAs that follow the registry at run time.

Installed into a ComfyUI with ``wanlora comfyui install --comfyui DIR`` (``uninstall`` removes it). It
runs in ComfyUI's own Python and imports only the standard library and ComfyUI's modules; it reads
what ``wanlora sync`` wrote (the manifest and the sidecars) and never loads a file sync did not verify.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
