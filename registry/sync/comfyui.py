"""Keep a ComfyUI LoRA folder in step with the registry's current versions.

Layout: ``<loras>/wanlora/<project>/<category>/<name>.safetensors`` (A14B pairs as ``<name>_high_noise``
and ``<name>_low_noise``), so workflows keep their file names across promotions and rollbacks; with
``pin`` also ``<name>@<version>…``. ``<loras>`` is ``ComfyUI/models/loras`` unless ComfyUI's
``extra_model_paths.yaml`` names another ``loras`` folder.

Guarantees:
- atomic: each file is written to a temporary file in its own folder, fsynced, verified against its
  sha256 and renamed over the old one, so a killed sync leaves the old file or the new one;
- owned: ``.wanlora-manifest.json`` lists the files wanlora wrote; nothing else is ever touched;
- cheap when idle: a file whose manifest entry, size and mtime match needs no read, so a sync with
  nothing to do costs one query and a stat per file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from registry.blobs.base import CHUNK, ArtifactSource, fsync_dir
from registry.domain.digests import file_sha256
from registry.domain.errors import IntegrityError, InvalidInput
from registry.domain.schemas import SyncTarget
from registry.sync.sidecars import content_sha256, sidecars

__all__ = ["SyncReport", "loras_dir", "sync_comfyui", "watch_comfyui"]

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


def loras_dir(comfyui: Path) -> Path:
    """ComfyUI's LoRA folder, honouring a ``loras`` entry of ``extra_model_paths.yaml``."""
    comfyui = Path(comfyui).expanduser()
    extra = comfyui / "extra_model_paths.yaml"
    if extra.is_file():
        try:
            doc = yaml.safe_load(extra.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InvalidInput(f"{extra} is not valid YAML: {exc}", hint="fix or remove the file") from exc
        sections = [s for s in doc.values() if isinstance(s, dict) and s.get("loras")] if isinstance(doc, dict) else []
        sections.sort(key=lambda s: not s.get("is_default", False))
        if sections:
            section = sections[0]
            base = Path(str(section.get("base_path", "."))).expanduser()
            if not base.is_absolute():
                base = comfyui / base
            first = next(line.strip() for line in str(section["loras"]).splitlines() if line.strip())
            path = Path(first).expanduser()
            return path if path.is_absolute() else base / path
    return comfyui / "models" / "loras"


def wanted_files(targets: list[SyncTarget], *, pin: bool) -> dict[str, Wanted]:
    out: dict[str, Wanted] = {}
    for t in targets:
        for f in t.files:
            suffix = "" if f.role.value == "single" else f"_{f.role.value}"
            names = [f"{t.lora}{suffix}.safetensors"]
            if pin:
                names.append(f"{t.lora}@{t.version}{suffix}.safetensors")
            for name in names:
                rel = f"{t.project}/{t.category.value}/{name}"
                out[rel] = Wanted(rel, f.sha256, f.size, t.project, t.lora, t.version, f.role.value, t)
    return out


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _load_manifest(root: Path) -> tuple[dict[str, dict[str, Any]], bool]:
    """The managed files, and whether the last sync kept pinned files (``--pin`` is remembered)."""
    path = root / MANIFEST
    if not path.exists():
        return {}, False
    try:
        doc = json.loads(path.read_text())
        files = doc["files"]
        assert isinstance(files, dict) and all(isinstance(e, dict) for e in files.values())
        return files, bool(doc.get("pin", False))
    except (ValueError, KeyError, AssertionError):
        raise InvalidInput(
            f"{path} is damaged, so wanlora cannot tell which files it manages",
            hint="move the folder's files aside, delete the manifest and sync again",
        ) from None


def _write_atomic(path: Path, data: bytes) -> None:
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


def copy_verified(store: ArtifactSource, want: Wanted, dest: Path, progress: Progress | None = None) -> None:
    """Stream one artifact to ``dest`` atomically: temp file in the same folder, fsync, verify, rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=TMP_PREFIX)
    digest = hashlib.sha256()
    done = 0
    try:
        with os.fdopen(fd, "wb", buffering=0) as out, store.open(want.sha256) as src:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(want.relpath, done, want.size)
            os.fsync(out.fileno())
        if digest.hexdigest() != want.sha256:
            raise IntegrityError(f"copy of {want.relpath} does not match its sha256", hint="run the sync again")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _managed_scope(entry: dict[str, Any], project: str | None) -> bool:
    return project is None or entry.get("project") == project


def _walk(root: Path) -> Iterator[str]:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if rel != MANIFEST:
                yield rel


def sync_comfyui(
    targets: list[SyncTarget],
    store: ArtifactSource,
    comfyui: Path,
    *,
    project: str | None = None,
    pin: bool | None = None,
    check: bool = False,
    verify: bool = False,
    progress: Progress | None = None,
) -> SyncReport:
    """Bring ``comfyui``'s wanlora folder to ``targets``, sidecars included; with ``check``, only report
    the drift. ``pin`` (keep NAME@VERSION files too) defaults to what the last sync did."""
    base = loras_dir(comfyui)
    root = base / ROOT
    report = SyncReport(loras_dir=str(base), checked=check)
    if not check:
        root.mkdir(parents=True, exist_ok=True)
    manifest, pinned = _load_manifest(root)
    report.pinned = pinned if pin is None else pin
    wanted = wanted_files(targets, pin=report.pinned)
    new_manifest = dict(manifest)

    # Leftovers of a killed sync are ours by name; clean them before anything else.
    on_disk = set(_walk(root)) if root.exists() else set()
    for rel in sorted(on_disk):
        if Path(rel).name.startswith(TMP_PREFIX):
            on_disk.discard(rel)
            if not check:
                (root / rel).unlink(missing_ok=True)

    for rel, want in sorted(wanted.items()):
        path = root / rel
        entry = manifest.get(rel)
        stat = _stat_key(path)
        if entry is None and stat is not None:
            report.conflicts.append(rel)  # someone else's file sits where ours should go: never touch it
            continue
        intact = (
            entry is not None
            and stat is not None
            and ((stat == (entry["size"], entry["mtime_ns"]) and not verify) or file_sha256(path) == entry["sha256"])
        )
        if entry is not None and entry["sha256"] == want.sha256 and intact:
            report.unchanged.append(rel)
            if not check and stat != (entry["size"], entry["mtime_ns"]):  # touched, same bytes: trust it again
                new_manifest[rel] = {**entry, "size": stat[0], "mtime_ns": stat[1]}  # type: ignore[index]
            continue
        if stat is None:
            report.missing.append(rel)
        elif not intact:
            report.modified.append(rel)
        else:
            report.outdated.append(rel)
        if check:
            continue
        copy_verified(store, want, path, progress)
        size, mtime_ns = _stat_key(path) or (0, 0)
        new_manifest[rel] = {
            "sha256": want.sha256,
            "size": size,
            "mtime_ns": mtime_ns,
            "project": want.project,
            "lora": want.lora,
            "version": want.version,
            "role": want.role,
        }
        report.copied.append(rel)
        report.bytes_copied += want.size

    for rel, entry in sorted(manifest.items()):
        if rel in wanted or not _managed_scope(entry, project) or entry.get("role") == SIDECAR:
            continue
        path = root / rel
        stat = _stat_key(path)
        report.stale.append(rel)
        if check:
            continue
        if stat is not None and stat != (entry["size"], entry["mtime_ns"]) and file_sha256(path) != entry["sha256"]:
            # Changed by hand since we wrote it: stop managing it, but do not destroy someone's edit.
            report.modified.append(rel)
        elif stat is not None:
            path.unlink()
            report.removed.append(rel)
        del new_manifest[rel]

    _sync_sidecars(root, wanted, manifest, new_manifest, report, project=project)
    report.unknown = sorted(rel for rel in on_disk if rel not in manifest and rel not in wanted)

    if not check and (new_manifest != manifest or report.pinned != pinned):
        doc = {"version": 1, "pin": report.pinned, "files": new_manifest}
        _write_atomic(root / MANIFEST, json.dumps(doc, indent=1).encode())
        _prune_empty_dirs(root)
    return report


def _sync_sidecars(
    root: Path,
    wanted: dict[str, Wanted],
    manifest: dict[str, dict[str, Any]],
    new_manifest: dict[str, dict[str, Any]],
    report: SyncReport,
    *,
    project: str | None,
) -> None:
    """Write the sidecars of every managed LoRA file whose content changed or that are missing;
    remove those of files that went. An edit by another tool is kept while the version stays."""
    desired: dict[str, tuple[bytes, Wanted]] = {}
    for rel, want in wanted.items():
        entry = new_manifest.get(rel)
        if want.target is None or entry is None or entry["sha256"] != want.sha256:
            continue  # not ours on disk (a conflict, say): nothing next to it either
        for side, data in sidecars(
            want.target, rel=rel, role=want.role, sha256=want.sha256, size=want.size, path=root / rel
        ).items():
            desired[side] = (data, want)
    for side, (data, want) in sorted(desired.items()):
        entry = manifest.get(side)
        path = root / side
        exists = path.exists()
        if entry is None and exists:
            report.conflicts.append(side)  # someone else's file: never touch it
            continue
        digest = content_sha256(data)
        if entry is not None and entry.get("content_sha256") == digest and exists:
            continue
        if report.checked:
            report.sidecars_missing.append(side)
            continue
        _write_atomic(path, data)
        os.chmod(path, 0o644)
        new_manifest[side] = {
            "sha256": digest, "content_sha256": digest, "size": len(data), "project": want.project,
            "lora": want.lora, "version": want.version, "role": SIDECAR, "of": want.relpath,
        }  # fmt: skip
        report.sidecars_written.append(side)
    for side, entry in sorted(manifest.items()):
        if entry.get("role") != SIDECAR or side in desired or not _managed_scope(entry, project):
            continue
        if not report.checked:
            (root / side).unlink(missing_ok=True)
            del new_manifest[side]
            report.sidecars_removed.append(side)


def _prune_empty_dirs(root: Path) -> None:
    for dirpath, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
        if Path(dirpath) != root:
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)  # only succeeds when empty


def watch_comfyui(
    fetch: Callable[[], tuple[int, list[SyncTarget]]],
    last_change: Callable[[], int],
    apply: Callable[[list[SyncTarget]], SyncReport],
    *,
    interval: float = 0.2,
    stop: threading.Event | None = None,
    on_sync: Callable[[SyncReport], None] | None = None,
) -> None:
    """Sync, then re-sync whenever the event log moves (checked every ``interval`` seconds)."""
    stop = stop or threading.Event()
    seen, targets = fetch()
    report = apply(targets)
    if on_sync:
        on_sync(report)
    while not stop.wait(interval):
        latest = last_change()
        if latest == seen:
            continue
        seen, targets = fetch()
        report = apply(targets)
        if on_sync:
            on_sync(report)
