"""Sidecars next to each synced LoRA file, in the forms ComfyUI users' tools already read.

- ``<name>.metadata.json``: ComfyUI-Lora-Manager's record (trigger words in ``civitai.trainedWords``,
  the recommended strength in ``usage_tips``, notes, description, tags, sha256, base model);
- ``<name>.json``: the A1111 / Forge form (``activation text``, ``preferred weight``, ``description``,
  ``notes``), which Lora-Manager also imports;
- ``<name>.preview.png``: a frame of the version's phase 2 contact sheet, where it has one (Lora-Manager's
  ``preview_url`` points to it);
- ``<name>.wanlora.json``: wanlora's own fields (version, status, changelog, scores, recommended
  strength, the guide's stacking ranges, the file's sha256), which the ComfyUI node pack reads.

Sidecars are managed like the LoRA files: listed in the manifest, written atomically, removed with
their LoRA. Tools edit their sidecars (Lora-Manager keeps favourites and notes in its file), so a
sidecar is rewritten only when what wanlora would write changes, a new version for instance, or when
it is missing; an edit alone is left as it is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from registry.domain.schemas import SyncTarget

__all__ = ["SIDECAR_SUFFIXES", "STACKING", "sidecars"]

SIDECAR_SUFFIXES = (".metadata.json", ".json", ".wanlora.json", ".preview.png")
# The guide's strengths when LoRAs are stacked: one alone, two together, three or more.
STACKING = {"1": [0.9, 1.0], "2": [0.7, 0.9], "3+": [0.6, 0.8]}
# Civitai's names of the WAN 2.2 base models, which Lora-Manager shows and filters by.
_BASE_MODEL_LABELS = {
    "wan2.2-t2v-a14b": "Wan Video 2.2 T2V-A14B",
    "wan2.2-i2v-a14b": "Wan Video 2.2 I2V-A14B",
    "wan2.2-ti2v-5b": "Wan Video 2.2 TI2V-5B",
}


def _json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()


def sidecars(
    target: SyncTarget, *, rel: str, role: str, sha256: str, size: int, path: Path, preview: Path | None = None
) -> dict[str, bytes]:
    """The sidecars of one synced file (``rel`` under wanlora's folder, at ``path`` on this host):
    relative path → content. The content depends only on the version, so an unchanged version
    writes nothing. ``preview`` is where the version's preview PNG goes, when it has one."""
    stem = rel.removesuffix(".safetensors")
    strength = target.recommended_strength
    where = f"{target.project}/{target.category.value}/{target.lora}"
    served = "trial candidate" if target.trial else target.status.value
    notes = f"wanlora {where}@{target.version} ({served}). {target.changelog}".strip()
    description = target.description or f"{target.category.value} LoRA {target.lora} for {target.base_model}"
    own = {
        "project": target.project,
        "lora": target.lora,
        "category": target.category.value,
        "version": target.version,
        "status": target.status.value,
        "trial": target.trial,
        "role": role,
        "base_model": target.base_model,
        "sha256": sha256,
        "size": size,
        "trigger_words": target.trigger_words,
        "recommended_strength": strength,
        "stacking": STACKING,
        "changelog": target.changelog,
        "scores": target.scores,
        "description": target.description,
    }
    lora_manager = {
        "file_name": Path(stem).name,
        "model_name": f"{target.lora} {target.version}",
        "file_path": path.as_posix(),
        "size": size,
        "modified": target.created_at.timestamp() if target.created_at else 0.0,
        "sha256": sha256,
        "base_model": _BASE_MODEL_LABELS.get(target.base_model, target.base_model),
        "preview_url": preview.as_posix() if preview is not None else "",
        "preview_nsfw_level": 0,
        "notes": notes,
        "from_civitai": False,
        "civitai": {"name": target.version, "trainedWords": target.trigger_words},
        "tags": [target.category.value, "wanlora", target.project],
        "modelDescription": description,
        "civitai_deleted": False,
        "favorite": False,
        "exclude": False,
        "usage_tips": json.dumps({"strength": strength} if strength is not None else {}),
        "wanlora": own,
    }
    a1111 = {
        "description": description,
        "sd version": "Other",
        "activation text": ", ".join(target.trigger_words),
        "preferred weight": strength if strength is not None else 0,
        "negative text": "",
        "notes": notes,
    }
    return {
        f"{stem}.metadata.json": _json(lora_manager),
        f"{stem}.json": _json(a1111),
        f"{stem}.wanlora.json": _json(own),
    }


def content_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
