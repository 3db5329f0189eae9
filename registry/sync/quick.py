"""The no-op sync, answered before anything heavy is imported.

A sync that finishes clean records in its manifest a *state*: the registry's tag for the targets it
synced (the embedded database's schema revision and event-log head, or the server's ETag of
``/api/v1/resolve`` for this caller), with the options that shape the folder. Every change to what
``current_targets`` answers appends an event, so while the tag stays the same and every managed file
still has the size and mtime the manifest recorded, a new sync has nothing to do: this module tells
that with the standard library alone (``sqlite3``, ``http.client``), so ``wanlora sync`` with nothing
to do costs a process start, one query or one conditional request, and a ``stat`` per file.

Anything it cannot vouch for (no state, another registry or options, a file touched, an unknown file
in the folder, a database it cannot read cheaply) answers ``None``, and the caller runs the full sync.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from registry.domain.digests import targets_tag

__all__ = [
    "FORMAT",
    "embedded_database_url",
    "embedded_tag",
    "folder_unchanged",
    "remote_unchanged",
    "setting",
    "sync_state",
]

FORMAT = 1  # bump when what a sync writes changes, so folders synced by an older wanlora sync again
MANIFEST = ".wanlora-manifest.json"  # registry.sync.folder's names, kept light here
SIDECAR = "sidecar"
MAX_MANIFEST_BYTES = 64 * 2**20


def setting(environ: Mapping[str, str], name: str) -> str | None:
    """``WANLORA_<NAME>`` as pydantic-settings reads it (any case), without pydantic."""
    wanted = f"WANLORA_{name}".upper()
    return next((v for k, v in environ.items() if k.upper() == wanted), None)


def embedded_database_url(environ: Mapping[str, str]) -> str:
    """``Settings.resolved_database_url`` from the same variables (a test holds the two together)."""
    home = Path(setting(environ, "home") or "~/.wanlora").expanduser()
    return setting(environ, "database_url") or f"sqlite:///{home / 'registry.db'}"


def embedded_tag(database_url: str) -> str | None:
    """The tag of the embedded registry: SQLite read-only through ``sqlite3``, PostgreSQL through
    psycopg; ``None`` for another database or one that cannot be read (the full sync then says why)."""
    if database_url.startswith(("postgresql", "postgres:")):
        return _postgres_tag(database_url)
    if not database_url.startswith("sqlite:///"):
        return None
    path = unquote(database_url.removeprefix("sqlite:///").split("?", 1)[0])
    if not path or path == ":memory:" or not Path(path).is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{Path(path).as_posix()}?mode=ro", uri=True, timeout=5)
        try:
            head = con.execute("SELECT max(id) FROM events").fetchone()[0] or 0
            revision = con.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            con.close()
    except (sqlite3.Error, TypeError):
        return None
    return targets_tag(revision[0] if revision else None, int(head))


def _postgres_tag(database_url: str) -> str | None:
    try:
        import psycopg
    except ImportError:
        return None
    scheme, _, rest = database_url.partition("://")
    if scheme not in ("postgres", "postgresql", "postgresql+psycopg"):
        return None
    try:
        with psycopg.connect(f"postgresql://{rest}", connect_timeout=10) as con:
            head = con.execute("SELECT max(id) FROM events").fetchone()
            revision = con.execute("SELECT version_num FROM alembic_version").fetchone()
    except psycopg.Error:
        return None
    return targets_tag(revision[0] if revision else None, int((head or (0,))[0] or 0))


def remote_unchanged(
    server: str, token: str | None, *, project: str | None, client: str | None, etag: str, timeout: float = 30
) -> bool:
    """Whether the server answers ``304 Not Modified`` to this caller's ``/api/v1/resolve`` with the
    ETag the last sync saw. Any other answer, or none, is ``False``: the full sync then talks to the
    server and reports what went wrong."""
    import http.client

    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    conn_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    params = urlencode({k: v for k, v in (("project", project), ("client", client)) if v})
    path = f"{parts.path.rstrip('/')}/api/v1/resolve" + (f"?{params}" if params else "")
    headers = {"If-None-Match": etag, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn = conn_type(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers)
            answer = conn.getresponse()
            answer.read(1 << 16)
            return answer.status == 304
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False


def sync_state(tag: str, *, loras_dir: Path, project: str | None, client: str | None, pin: bool) -> str:
    """What a clean sync records: the registry's tag with the options that shape the folder."""
    doc = [FORMAT, tag, str(loras_dir), project, client, pin]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


def read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        with open(root / MANIFEST, "rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
        doc = json.loads(raw) if len(raw) <= MAX_MANIFEST_BYTES else None
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("files"), dict) else None


def recorded(loras_dir: Path) -> tuple[dict[str, Any], str | None, bool] | None:
    """The manifest under ``loras_dir``, its recorded state and its pin; ``None`` without one."""
    doc = read_manifest(loras_dir / "wanlora")
    if doc is None:
        return None
    state = doc.get("state")
    return doc, state if isinstance(state, str) else None, bool(doc.get("pin", False))


def folder_unchanged(loras_dir: Path, doc: dict[str, Any], state: str) -> dict[str, Any] | None:
    """The report of a sync with nothing to do (``SyncReport.as_dict``'s form), when the manifest
    records ``state`` and every managed file is as it was left; else ``None``."""
    if doc.get("state") != state:
        return None
    root = loras_dir / "wanlora"
    files: dict[str, Any] = doc["files"]
    unchanged = []
    for rel, entry in files.items():
        # the full sync holds each name to the path rules; here a strange one just means "look closer"
        if not isinstance(rel, str) or not isinstance(entry, dict) or rel.startswith("/") or ".." in rel.split("/"):
            return None
        try:
            st = os.stat(root / rel, follow_symlinks=False)
        except OSError:
            return None
        if entry.get("role") == SIDECAR:
            continue
        if (st.st_size, st.st_mtime_ns) != (entry.get("size"), entry.get("mtime_ns")):
            return None
        unchanged.append(rel)
    for dirpath, _, names in os.walk(root):  # an unknown file or a killed sync's leftover: let the full sync see
        base = os.path.relpath(dirpath, root).replace(os.sep, "/")
        for name in names:
            rel = name if base == "." else f"{base}/{name}"
            if rel != MANIFEST and rel not in files:
                return None
    return {
        "loras_dir": str(loras_dir), "copied": [], "removed": [], "unchanged": sorted(unchanged), "missing": [],
        "modified": [], "outdated": [], "stale": [], "unknown": [], "conflicts": [], "checked": False,
        "bytes_copied": 0, "pinned": bool(doc.get("pin", False)), "sidecars_written": [], "sidecars_removed": [],
        "sidecars_missing": [], "comfyui_freed": None, "comfyui_error": None, "drift": False, "fast": True,
    }  # fmt: skip
