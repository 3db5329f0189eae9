"""Keep the sidecars of the synced files in step (see ``registry.sync.sidecars`` for their forms)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from registry.domain.schemas import SyncTarget
from registry.sync.folder import SIDECAR, SyncReport, Wanted, managed_scope, write_atomic
from registry.sync.sidecars import content_sha256, sidecars

__all__ = ["PreviewSource", "sync_sidecars"]

PreviewSource = Callable[[SyncTarget], bytes | None]  # the PNG behind a target's preview_sha256


def sync_sidecars(
    root: Path,
    wanted: dict[str, Wanted],
    manifest: dict[str, dict[str, Any]],
    new_manifest: dict[str, dict[str, Any]],
    report: SyncReport,
    *,
    project: str | None,
    preview: PreviewSource | None = None,
) -> None:
    """Write the sidecars of every managed LoRA file whose content changed or that are missing;
    remove those of files that went. An edit by another tool is kept while the version stays. The
    preview is fetched (``preview``) only when it is missing or another one is due."""
    desired: dict[str, tuple[str, Callable[[], bytes | None], Wanted]] = {}
    for rel, want in wanted.items():
        entry = new_manifest.get(rel)
        if want.target is None or entry is None or entry["sha256"] != want.sha256:
            continue  # not ours on disk (a conflict, say): nothing next to it either
        target = want.target
        png = root / (rel.removesuffix(".safetensors") + ".preview.png")
        has_preview = preview is not None and target.preview_sha256 is not None
        for side, data in sidecars(
            target, rel=rel, role=want.role, sha256=want.sha256, size=want.size, path=root / rel,
            preview=png if has_preview else None,
        ).items():  # fmt: skip
            desired[side] = (content_sha256(data), partial(_given, data), want)
        if preview is not None and target.preview_sha256 is not None:
            desired[png.relative_to(root).as_posix()] = (target.preview_sha256, partial(preview, target), want)
    for side, (digest, content, want) in sorted(desired.items()):
        entry = manifest.get(side)
        path = root / side
        exists = path.exists()
        if entry is None and exists:
            report.conflicts.append(side)  # someone else's file: never touch it
            continue
        if entry is not None and entry.get("content_sha256") == digest and exists:
            continue
        if report.checked:
            report.sidecars_missing.append(side)
            continue
        fetched = content()
        if fetched is None or content_sha256(fetched) != digest:
            continue  # the registry has no such preview (any more): the next sync asks again
        data = fetched
        write_atomic(path, data)
        os.chmod(path, 0o644)
        new_manifest[side] = {
            "sha256": digest, "content_sha256": digest, "size": len(data), "project": want.project,
            "lora": want.lora, "version": want.version, "role": SIDECAR, "of": want.relpath,
        }  # fmt: skip
        report.sidecars_written.append(side)
    for side, entry in sorted(manifest.items()):
        if entry.get("role") != SIDECAR or side in desired or not managed_scope(entry, project):
            continue
        if not report.checked:
            (root / side).unlink(missing_ok=True)
            del new_manifest[side]
            report.sidecars_removed.append(side)


def _given(data: bytes) -> bytes | None:
    return data
