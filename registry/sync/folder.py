"""The wanlora folder under ComfyUI's LoRAs: names, the manifest, atomic writes, and the report of a sync."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.domain.errors import InvalidInput

if TYPE_CHECKING:
    from registry.domain.schemas import SyncTarget

__all__ = [
    "MANIFEST",
    "ROOT",
    "SIDECAR",
    "TMP_PREFIX",
    "Progress",
    "SyncReport",
    "Wanted",
    "is_inside",
    "loras_dir",
]

MANIFEST = ".wanlora-manifest.json"
SIDECAR = "sidecar"  # the role of a sidecar's manifest entry
TMP_PREFIX = ".wanlora-tmp-"
ROOT = "wanlora"
Progress = Callable[[str, int, int], None]


@dataclass
class Wanted:
    relpath: str
    sha256: str
    size: int
    project: str
    lora: str
    version: str
    role: str
    target: SyncTarget | None = None


@dataclass
class SyncReport:
    loras_dir: str
    copied: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # wanted, not on disk
    modified: list[str] = field(default_factory=list)  # managed file changed on disk
    outdated: list[str] = field(default_factory=list)  # on disk, but another version is current now
    stale: list[str] = field(default_factory=list)  # managed, but its LoRA has no current version any more
    unknown: list[str] = field(default_factory=list)  # in wanlora's folder but not written by wanlora
    conflicts: list[str] = field(default_factory=list)  # a wanted path is taken by an unmanaged file
    checked: bool = False
    bytes_copied: int = 0
    pinned: bool = False  # NAME@VERSION files kept too (remembered in the manifest)
    sidecars_written: list[str] = field(default_factory=list)
    sidecars_removed: list[str] = field(default_factory=list)
    sidecars_missing: list[str] = field(default_factory=list)  # with check: would be written
    comfyui_freed: bool | None = None  # with a ComfyUI URL: whether it dropped its caches after a change
    comfyui_error: str | None = None
    fast: bool = False  # answered from the manifest's recorded state (registry.sync.quick), nothing read

    @property
    def changed(self) -> bool:
        """Whether a LoRA file came or went (what a running ComfyUI has to hear about)."""
        return bool(self.copied or self.removed)

    @property
    def drift(self) -> bool:
        return bool(
            self.missing
            or self.modified
            or self.outdated
            or self.stale
            or self.unknown
            or self.conflicts
            or self.sidecars_missing
        )

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()} | {"drift": self.drift}


def comfyui_root(path: Path, *, create: bool = False) -> Path:
    """``path`` as a ComfyUI folder: one with ``main.py``, a ``models/`` folder or an
    ``extra_model_paths.yaml`` (a source checkout, a portable or a desktop install). Anything else is
    refused with the folder that was probably meant, unless ``create`` makes a new one."""
    path = Path(path).expanduser()
    markers = (path / "main.py").is_file() or (path / "models").is_dir() or (path / "extra_model_paths.yaml").is_file()
    if markers:
        return path
    for parent in [path, *path.parents][:4]:  # models/loras, models/loras/wanlora, models/loras/wanlora/p
        if parent.name == "loras" and parent.parent.name == "models":
            raise InvalidInput(
                f"{path} is inside ComfyUI's LoRA folder, not a ComfyUI folder",
                hint=f"pass the ComfyUI folder itself: --comfyui {parent.parent.parent}",
            )
    if create:
        (path / "models" / "loras").mkdir(parents=True, exist_ok=True)
        return path
    what = (
        "does not exist"
        if not path.exists()
        else "is not a ComfyUI folder (no main.py, models/ or extra_model_paths.yaml)"
    )
    raise InvalidInput(
        f"{path} {what}",
        hint="pass the folder ComfyUI runs from (the one with main.py), or add --create to start a new one",
    )


def loras_dir(comfyui: Path) -> Path:
    """ComfyUI's LoRA folder, honouring a ``loras`` entry of ``extra_model_paths.yaml``."""
    comfyui = Path(comfyui).expanduser()
    extra = comfyui / "extra_model_paths.yaml"
    if extra.is_file():
        import yaml

        try:
            doc = yaml.safe_load(extra.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InvalidInput(f"{extra} is not valid YAML: {exc}", hint="fix or remove the file") from exc
        sections = [s for s in doc.values() if isinstance(s, dict) and s.get("loras")] if isinstance(doc, dict) else []
        sections.sort(key=lambda s: not s.get("is_default", False))
        if sections:
            section = sections[0]
            # as ComfyUI reads it (utils/extra_config.py): ~ and $VARS in base_path are expanded
            base = Path(os.path.expandvars(os.path.expanduser(str(section.get("base_path", ".")))))
            if not base.is_absolute():
                base = comfyui / base
            first = next(line.strip() for line in str(section["loras"]).splitlines() if line.strip())
            path = Path(first).expanduser()
            return path if path.is_absolute() else base / path
    return comfyui / "models" / "loras"


def stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def load_manifest(root: Path) -> tuple[dict[str, dict[str, Any]], bool]:
    """The managed files, and whether the last sync kept pinned files (``--pin`` is remembered)."""
    path = root / MANIFEST
    if not path.exists():
        return {}, False
    try:
        doc = json.loads(path.read_text())
        files = doc["files"]
        assert isinstance(files, dict) and all(isinstance(e, dict) for e in files.values())
    except (ValueError, KeyError, AssertionError):
        raise InvalidInput(
            f"{path} is damaged, so wanlora cannot tell which files it manages",
            hint="move the folder's files aside, delete the manifest and sync again",
        ) from None
    for rel in files:
        if not is_inside(root, rel):
            raise InvalidInput(
                f"{path} names {rel!r}, a path outside {root}: it was tampered with, and nothing was changed",
                hint="check who can write to the ComfyUI folder; then delete the manifest and sync again",
            )
    return files, bool(doc.get("pin", False))


def is_inside(root: Path, rel: str) -> bool:
    """Whether ``rel`` is a plain relative path (no ``..``, no absolute part) that stays inside ``root``
    once links are followed: only such paths are ever read, written or removed."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel:
        return False
    if any(part in ("", ".", "..") for part in rel.split("/")):
        return False
    base = root.resolve()
    return (base / rel).resolve().is_relative_to(base)


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def managed_scope(entry: dict[str, Any], project: str | None) -> bool:
    return project is None or entry.get("project") == project


def walk(root: Path) -> Iterator[str]:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if rel != MANIFEST:
                yield rel


def prune_empty_dirs(root: Path) -> None:
    for dirpath, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
        if Path(dirpath) != root:
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)  # only succeeds when empty
