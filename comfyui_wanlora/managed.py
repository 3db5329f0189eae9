"""What `wanlora sync` wrote, read inside ComfyUI: the manifest and the sidecars (standard library only).

A managed LoRA has a stable name, ``project/category/name``. It stands for one file, or for the
high-noise and low-noise pair of an A14B model, under ``<loras>/wanlora/``. The manifest records each
file's sha256 and the size and mtime it had when sync wrote and verified it. The manifest is read again
only when its own size or mtime changes (a ``stat``, no read), so asking for a digest on every prompt
costs nothing. A file is used only if it is the one sync verified: same size and mtime, or, if those
changed, the same sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ManagedFile", "ManagedLora", "Manifests", "WanloraError"]

MANIFEST = ".wanlora-manifest.json"
ROOT = "wanlora"
ROLES = ("single", "high_noise", "low_noise")
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


class WanloraError(ValueError):
    """A managed LoRA cannot be used as asked; the message says why and what to run."""


@dataclass(frozen=True)
class ManagedFile:
    role: str
    path: Path
    sha256: str
    size: int
    mtime_ns: int

    def on_disk(self) -> tuple[int, int, int] | None:
        """(inode, size, mtime) of the file there now: a new file (sync renames one in) is a new inode."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def as_synced(self) -> bool:
        """Whether the file has the size and mtime it had when sync wrote and verified it."""
        disk = self.on_disk()
        return disk is not None and disk[1:] == (self.size, self.mtime_ns)

    def verified(self) -> Path:
        """The path, once the file is known to be the one sync verified; WanloraError otherwise."""
        if self.on_disk() is None:
            raise WanloraError(f"{self.path} is missing: run `wanlora sync --comfyui …` on this host")
        if not self.as_synced():
            digest = hashlib.sha256()
            with open(self.path, "rb") as fh:
                while chunk := fh.read(8 << 20):
                    digest.update(chunk)
            if digest.hexdigest() != self.sha256:
                raise WanloraError(
                    f"{self.path} does not match the sha256 that wanlora sync recorded (changed by hand?): "
                    "it is not loaded; run `wanlora sync --comfyui …` to restore it"
                )
        return self.path


@dataclass(frozen=True)
class ManagedLora:
    name: str  # project/category/name
    version: str
    files: tuple[ManagedFile, ...]  # role order: single, or high_noise then low_noise
    info: dict[str, Any]  # the .wanlora.json sidecar (trigger words, strength, status, …)

    @property
    def pair(self) -> bool:
        return len(self.files) == 2

    @property
    def fingerprint(self) -> str:
        """What ComfyUI caches the node's output by: the digests the manifest records for the files, and
        the files' identity on disk. A promote, a rollback or a trial switch is a new key, nothing else
        is, and a key never stands for weights other than the ones loaded under it."""
        return ",".join(f"{f.role}:{f.sha256}:{f.on_disk()}" for f in self.files)


class Manifests:
    """The manifests under a set of ComfyUI LoRA folders, re-read when they change."""

    def __init__(self, folders: list[str]) -> None:
        self.folders = folders
        self._cache: dict[Path, tuple[tuple[int, int], dict[str, dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def _entries(self) -> list[tuple[Path, dict[str, dict[str, Any]]]]:
        out = []
        for folder in self.folders:
            root = Path(folder) / ROOT
            try:
                st = (root / MANIFEST).stat()
            except OSError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            with self._lock:
                cached = self._cache.get(root)
                if cached is None or cached[0] != key:
                    cached = (key, _read_manifest(root / MANIFEST, st.st_size))
                    self._cache[root] = cached
            out.append((root, cached[1]))
        return out

    def settled(self, name: str, version: str = "", *, timeout: float = 30.0) -> ManagedLora:
        """Like ``resolve``, once the files and the manifest agree. Sync renames each new file into place
        and writes the manifest after them, so for a moment a file can be newer than its entry: wait for
        the entry (the copies of the rest of a pair may take seconds) rather than load an unlisted file."""
        deadline = time.monotonic() + timeout
        while True:
            managed = self.resolve(name, version)
            if all(f.as_synced() for f in managed.files):
                return managed
            if time.monotonic() > deadline:
                for f in managed.files:
                    f.verified()  # same bytes, touched: fine; other bytes: refused
                return managed
            time.sleep(0.02)

    def names(self) -> list[str]:
        """The stable names of every managed LoRA (pinned NAME@VERSION files are not names of their own)."""
        names = set()
        for _, files in self._entries():
            for rel, entry in files.items():
                if entry.get("role") in ROLES and "@" not in rel:
                    names.add(_stable_name(rel, entry["role"]))
        return sorted(names)

    def resolve(self, name: str, version: str = "") -> ManagedLora:
        """The files of a managed LoRA: the version sync put there, or exactly ``version`` (pinned)."""
        version = version.strip().removeprefix("v")
        parts = name.split("/")
        if len(parts) != 3 or not all(parts) or any(p in (".", "..") for p in parts):
            raise WanloraError(f"{name!r} is not a managed LoRA name (project/category/name)")
        project, category, lora = parts
        base = f"{lora}@{version}" if version else lora
        for root, files in self._entries():
            found = []
            for role in ROLES:
                rel = f"{project}/{category}/{base}{'' if role == 'single' else '_' + role}.safetensors"
                entry = files.get(rel)
                if entry is not None and entry.get("role") == role:
                    found.append((rel, entry))
            if found:
                return _managed(root, name, found)
        if version:
            raise WanloraError(
                f"{name}@{version} is not on this host: pinned files come with `wanlora sync --pin`, and only "
                f"for a version that is current (or on trial) for this host"
            )
        raise WanloraError(f"{name} is not on this host: run `wanlora sync --comfyui …`, or pick another LoRA")


def _stable_name(rel: str, role: str) -> str:
    stem = rel.removesuffix(".safetensors")
    if role != "single":
        stem = stem.removesuffix(f"_{role}")
    return stem


def _read_manifest(path: Path, size: int) -> dict[str, dict[str, Any]]:
    if size > MAX_MANIFEST_BYTES:
        raise WanloraError(f"{path} is {size} bytes, more than a manifest can be: delete it and sync again")
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise WanloraError(f"{path} is damaged: delete it and run `wanlora sync` again") from None
    if not isinstance(files, dict):
        raise WanloraError(f"{path} is damaged: delete it and run `wanlora sync` again")
    return {rel: entry for rel, entry in files.items() if isinstance(rel, str) and isinstance(entry, dict)}


def _inside(root: Path, rel: str) -> Path:
    """``root/rel``, refusing any path that a tampered manifest would point outside ``root``."""
    path = (root / rel).resolve()
    if os.path.commonpath([path, root.resolve()]) != str(root.resolve()):
        raise WanloraError(f"the manifest names {rel!r}, outside {root}: it is not loaded")
    return path


def _managed(root: Path, name: str, found: list[tuple[str, dict[str, Any]]]) -> ManagedLora:
    files = []
    for rel, entry in found:
        path = _inside(root, rel)
        try:
            files.append(
                ManagedFile(
                    role=str(entry["role"]), path=path, sha256=str(entry["sha256"]),
                    size=int(entry["size"]), mtime_ns=int(entry["mtime_ns"]),
                )
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            raise WanloraError(f"the manifest entry of {rel} is damaged: run `wanlora sync` again") from None
    roles = [f.role for f in files]
    if roles not in (["single"], ["high_noise", "low_noise"]):
        raise WanloraError(f"{name} has files {roles} on this host, not one file or a pair: run `wanlora sync`")
    versions = {str(entry.get("version", "")) for _, entry in found}
    if len(versions) != 1:
        raise WanloraError(f"the files of {name} are of different versions {sorted(versions)}: run `wanlora sync`")
    info: dict[str, Any] = {}
    sidecar = files[0].path.with_name(files[0].path.name.removesuffix(".safetensors") + ".wanlora.json")
    try:
        loaded = json.loads(sidecar.read_text())
        info = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass  # the sidecar only adds trigger words and the recommended strength
    return ManagedLora(name=name, version=versions.pop(), files=tuple(files), info=info)
