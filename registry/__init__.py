"""wanlora's registry: the data model, every business rule, storage, file inspection and ComfyUI sync.

The public surface is listed in ``__all__``; ``cli/`` (and later ``api/``) are thin doors onto it.
"""

from registry.app import RegisterRequest, Wanlora
from registry.db import Database
from registry.errors import (
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
from registry.ingest import IngestedFile, Inspection, ingest_lora, inspect_lora
from registry.service import RegistryService
from registry.settings import Settings
from registry.storage import ArtifactStore, LocalStore, open_store
from registry.sync import SyncReport, loras_dir, sync_comfyui, watch_comfyui

__all__ = [
    "AlreadyExists",
    "ArtifactStore",
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
    "SchemaOutdated",
    "Settings",
    "SyncReport",
    "Wanlora",
    "WanloraError",
    "ingest_lora",
    "inspect_lora",
    "loras_dir",
    "open_store",
    "sync_comfyui",
    "watch_comfyui",
]
