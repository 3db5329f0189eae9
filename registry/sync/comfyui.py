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

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from registry.blobs.base import (
    CHUNK,
    ArtifactSource,
    VerifyingReader,
    check_digest,
    copy_hashed,
    fsync_dir,
)
from registry.blobs.writeback import Writeback
from registry.domain.digests import file_sha256
from registry.domain.errors import IntegrityError, InvalidInput
from registry.domain.schemas import SyncTarget, check_name, parse_semver
from registry.sync.folder import (
    MANIFEST,
    ROOT,
    SIDECAR,
    TMP_PREFIX,
    Progress,
    SyncReport,
    Wanted,
    load_manifest,
    loras_dir,
    managed_scope,
    prune_empty_dirs,
    stat_key,
    walk,
    write_atomic,
)
from registry.sync.quick import read_manifest
from registry.sync.sidecar_sync import PreviewSource, sync_sidecars

__all__ = ["copy_verified", "sync_comfyui", "wanted_files", "watch_comfyui"]


def _check_target(t: SyncTarget) -> None:
    """What a registry sends becomes folder and file names here: hold it to the registration rules."""
    try:
        check_name(t.project, "project name")
        check_name(t.lora, "LoRA name")
        parse_semver(t.version)
        if "/" in t.version or "\\" in t.version:
            raise InvalidInput(f"invalid version {t.version!r}")
        for f in t.files:
            check_digest(f.sha256)
    except InvalidInput as exc:
        raise IntegrityError(
            f"the registry sent {t.project!r}/{t.lora!r}@{t.version!r}, which is not a valid LoRA ({exc.message}): "
            "nothing was synced",
            hint="sync only from a registry you trust, over https",
        ) from None


def wanted_files(targets: list[SyncTarget], *, pin: bool) -> dict[str, Wanted]:
    """The files the targets make, by path under wanlora's folder; every target is checked first."""
    for t in targets:
        _check_target(t)
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


def copy_verified(store: ArtifactSource, want: Wanted, dest: Path, progress: Progress | None = None) -> None:
    """Stream one artifact to ``dest`` atomically: temp file in the same folder, fsync, verify, rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=TMP_PREFIX)
    done = 0
    try:
        with os.fdopen(fd, "wb", buffering=0) as out, store.open(want.sha256) as src:
            local = src.local_fd() if isinstance(src, VerifyingReader) and src.sha256 == want.sha256 else None
            if local is not None:
                # A local store: the kernel copies the file, and what landed in the ComfyUI folder is
                # what gets hashed, so a bad copy and a corrupt stored file are both caught.
                report = (lambda n: progress(want.relpath, n, want.size)) if progress else None
                landed = copy_hashed(local, out.fileno(), os.fstat(local).st_size, report, early_writeback=True)
                os.fsync(out.fileno())
                src.check(*landed)
            else:
                # A verifying reader hashes what it hands out and raises at its end on a mismatch: one
                # hash of the bytes, not two. Any other source is hashed here.
                digest = None if isinstance(src, VerifyingReader) and src.sha256 == want.sha256 else hashlib.sha256()
                writeback = Writeback(out.fileno())
                while chunk := src.read(CHUNK):
                    if digest is not None:
                        digest.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    writeback.landed(done)
                    if progress:
                        progress(want.relpath, done, want.size)
                os.fsync(out.fileno())
                if digest is not None and digest.hexdigest() != want.sha256:
                    raise IntegrityError(f"copy of {want.relpath} does not match its sha256", hint="run the sync again")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    preview: PreviewSource | None = None,
    tag: str | None = None,
    state: Callable[[bool], str] | None = None,
) -> SyncReport:
    """Bring ``comfyui``'s wanlora folder to ``targets``, sidecars included; with ``check``, only report
    the drift. ``pin`` (keep NAME@VERSION files too) defaults to what the last sync did.

    ``tag`` is the registry's tag for ``targets`` and ``state(pin)`` the state they make with this
    sync's options: a sync that ends clean records both in the manifest, so the next one with nothing
    to do is answered by ``registry.sync.quick`` without a query for the targets."""
    base = loras_dir(comfyui)
    root = base / ROOT
    report = SyncReport(loras_dir=str(base), checked=check)
    if not check:
        root.mkdir(parents=True, exist_ok=True)
    manifest, pinned = load_manifest(root)
    report.pinned = pinned if pin is None else pin
    wanted = wanted_files(targets, pin=report.pinned)
    new_manifest = dict(manifest)

    # Leftovers of a killed sync are ours by name; clean them before anything else.
    on_disk = set(walk(root)) if root.exists() else set()
    for rel in sorted(on_disk):
        if Path(rel).name.startswith(TMP_PREFIX):
            on_disk.discard(rel)
            if not check:
                (root / rel).unlink(missing_ok=True)

    for rel, want in sorted(wanted.items()):
        path = root / rel
        entry = manifest.get(rel)
        stat = stat_key(path)
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
        size, mtime_ns = stat_key(path) or (0, 0)
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
        if rel in wanted or not managed_scope(entry, project) or entry.get("role") == SIDECAR:
            continue
        path = root / rel
        stat = stat_key(path)
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

    sync_sidecars(root, wanted, manifest, new_manifest, report, project=project, preview=preview)
    report.unknown = sorted(rel for rel in on_disk if rel not in manifest and rel not in wanted)

    if not check:
        _save_manifest(root, report, manifest, new_manifest, pinned, tag=tag, state=state)
    return report


def _save_manifest(
    root: Path,
    report: SyncReport,
    manifest: dict[str, dict[str, Any]],
    new_manifest: dict[str, dict[str, Any]],
    pinned: bool,
    *,
    tag: str | None,
    state: Callable[[bool], str] | None,
) -> None:
    """Write the manifest when anything in it changed, with the state of a clean sync."""
    recorded = read_manifest(root) or {}
    # clean: nothing left for the next sync to report (what this one found missing or outdated it fixed)
    clean = not (report.conflicts or report.unknown or set(report.modified) - set(report.copied))
    new_state = state(report.pinned) if state is not None and clean else None
    if new_manifest != manifest or report.pinned != pinned or recorded.get("state") != new_state:
        doc = {"version": 1, "pin": report.pinned, "files": new_manifest, "state": new_state, "tag": tag}
        write_atomic(root / MANIFEST, json.dumps(doc, indent=1).encode())
        prune_empty_dirs(root)


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
