"""Waiting for the event log to move without querying the database in a loop.

- PostgreSQL: migration 0010 makes every insert into ``events`` send ``NOTIFY wanlora_events`` (with
  the schema as payload, so registries sharing a database do not wake each other); the watcher holds
  one ``LISTEN`` connection and blocks on it.
- SQLite: every commit changes the database's files (the ``-wal`` file in WAL mode, the main file at a
  checkpoint); the watcher compares their size, mtime and inode every ``interval`` seconds: a ``stat``
  of two files, not a query.

``wait(timeout)`` returns ``True`` when the log may have moved (the caller then reads its head once),
``False`` when ``timeout`` passed quietly. A lost PostgreSQL connection counts as "may have moved" and is
opened again, so a missed notification costs one read, never a stale answer.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

__all__ = ["CHANNEL", "ChangeSignal", "FileSignal", "PostgresSignal"]

CHANNEL = "wanlora_events"


class ChangeSignal(Protocol):
    def wait(self, timeout: float) -> bool: ...

    def close(self) -> None: ...


class FileSignal:
    """SQLite: the database files' identity, looked at every ``interval`` seconds."""

    def __init__(self, path: Path, interval: float) -> None:
        self.paths = [path, path.with_name(path.name + "-wal")]
        self.interval = max(0.005, interval)
        self._seen = self._signature()
        self._closed = threading.Event()

    def _signature(self) -> tuple[tuple[int, int, int] | None, ...]:
        out: list[tuple[int, int, int] | None] = []
        for path in self.paths:
            try:
                st = os.stat(path)
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._closed.is_set():
            now = self._signature()
            if now != self._seen:
                self._seen = now
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._closed.wait(min(self.interval, left))
        return False

    def close(self) -> None:
        self._closed.set()


class PostgresSignal:
    """PostgreSQL: ``LISTEN wanlora_events`` on a connection of its own (made like the engine's)."""

    def __init__(self, connect: Any) -> None:
        self._connect = connect  # () -> a psycopg connection
        self._conn: Any = None
        self._schema: str | None = None
        self._closed = False

    def _open(self) -> None:
        conn = self._connect()
        conn.autocommit = True
        self._schema = conn.execute("SELECT current_schema()").fetchone()[0]
        conn.execute(f"LISTEN {CHANNEL}")
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        if self._closed:
            return False
        try:
            if self._conn is None:
                self._open()
                return True  # (re)connected: whatever happened meanwhile, read once
            notes = self._conn.notifies(timeout=timeout)
            return any(note.payload.split(":", 1)[0] == self._schema for note in notes)
        except Exception:  # the connection went (a restart, a network cut): read once, then listen again
            self._drop()
            if not self._closed:
                time.sleep(min(timeout, 1.0))
            return True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                conn.close()

    def close(self) -> None:
        self._closed = True
        self._drop()
