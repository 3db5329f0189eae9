"""wanlora's registry: the data model, every business rule, storage, file inspection and ComfyUI sync.

The public surface is listed in ``__all__``; ``cli/`` and ``api/`` are thin doors onto it, and the map
of the subpackages is ARCHITECTURE.md. The names are imported on first use, so that importing one
subpackage (``registry.domain``, say) does not load the database layer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from registry.backends import open_backend
    from registry.backends.contract import Backend
    from registry.backends.local import Wanlora
    from registry.backends.remote import RemoteWanlora
    from registry.blobs.base import ArtifactStore
    from registry.blobs.factory import open_store
    from registry.blobs.local import LocalStore
    from registry.db.engine import Database
    from registry.domain.errors import (
        AlreadyExists,
        Conflict,
        IntegrityError,
        InvalidFile,
        InvalidInput,
        NotFound,
        PermissionDenied,
        SchemaOutdated,
        WanloraError,
    )
    from registry.domain.register import RegisterRequest
    from registry.files.ingest import IngestedFile, Inspection, ingest_lora, inspect_lora
    from registry.services.registry import RegistryService
    from registry.settings import Settings
    from registry.sync.comfyui import SyncReport, loras_dir, sync_comfyui, watch_comfyui

_WHERE = {
    "AlreadyExists": "registry.domain.errors",
    "ArtifactStore": "registry.blobs.base",
    "Backend": "registry.backends.contract",
    "Conflict": "registry.domain.errors",
    "Database": "registry.db.engine",
    "IngestedFile": "registry.files.ingest",
    "Inspection": "registry.files.ingest",
    "IntegrityError": "registry.domain.errors",
    "InvalidFile": "registry.domain.errors",
    "InvalidInput": "registry.domain.errors",
    "LocalStore": "registry.blobs.local",
    "NotFound": "registry.domain.errors",
    "PermissionDenied": "registry.domain.errors",
    "RegisterRequest": "registry.domain.register",
    "RegistryService": "registry.services.registry",
    "RemoteWanlora": "registry.backends.remote",
    "SchemaOutdated": "registry.domain.errors",
    "Settings": "registry.settings",
    "SyncReport": "registry.sync.comfyui",
    "Wanlora": "registry.backends.local",
    "WanloraError": "registry.domain.errors",
    "ingest_lora": "registry.files.ingest",
    "inspect_lora": "registry.files.ingest",
    "loras_dir": "registry.sync.comfyui",
    "open_backend": "registry.backends",
    "open_store": "registry.blobs.factory",
    "sync_comfyui": "registry.sync.comfyui",
    "watch_comfyui": "registry.sync.comfyui",
}

__all__ = [
    "AlreadyExists",
    "ArtifactStore",
    "Backend",
    "Conflict",
    "Database",
    "IngestedFile",
    "Inspection",
    "IntegrityError",
    "InvalidFile",
    "InvalidInput",
    "LocalStore",
    "NotFound",
    "PermissionDenied",
    "RegisterRequest",
    "RegistryService",
    "RemoteWanlora",
    "SchemaOutdated",
    "Settings",
    "SyncReport",
    "Wanlora",
    "WanloraError",
    "ingest_lora",
    "inspect_lora",
    "loras_dir",
    "open_backend",
    "open_store",
    "sync_comfyui",
    "watch_comfyui",
]  # the keys of _WHERE, spelled out for linters and readers


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
