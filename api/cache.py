"""Per-process caches that keep the hot read path (resolve) off the database.

- ``AuthCache``: a presented token's principal for a few seconds. A revocation through this process
  clears it at once; other worker processes see it within ``ttl`` seconds.
- ``Generation``: the event log's newest id, re-read at most every ``interval`` seconds. Every state
  change appends an event, so a cached answer tagged with the generation it was computed at is valid
  exactly while the generation stays the same.
- ``ResponseCache``: serialized answers keyed by caller and request, tagged with a generation.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Hashable
from datetime import datetime, timezone

from registry.domain.access import Principal


class AuthCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[Principal, float]] = {}

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> Principal | None:
        entry = self._entries.get(self._key(token))
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def put(self, token: str, principal: Principal, expires_at: datetime | None) -> None:
        if self.ttl <= 0:
            return
        deadline = time.monotonic() + self.ttl
        if expires_at is not None:  # never past the token's own expiry
            left = (expires_at - datetime.now(timezone.utc)).total_seconds()
            deadline = min(deadline, time.monotonic() + left)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[self._key(token)] = (principal, deadline)

    def clear(self) -> None:
        self._entries.clear()


class Generation:
    def __init__(self, read: Callable[[], int], interval: float) -> None:
        self._read = read
        self.interval = interval
        self._value = -1
        self._checked = 0.0
        self._lock = threading.Lock()

    def due(self) -> bool:
        """True when ``current`` would read the database (so an async caller can do it off the loop)."""
        return time.monotonic() - self._checked >= self.interval

    def current(self) -> int:
        now = time.monotonic()
        if now - self._checked >= self.interval:
            with self._lock:
                if now - self._checked >= self.interval:
                    self._value = self._read()
                    self._checked = time.monotonic()
        return self._value

    def invalidate(self) -> None:
        self._checked = 0.0


class ResponseCache:
    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._entries: dict[Hashable, tuple[int, bytes]] = {}

    def get(self, key: Hashable, generation: int) -> bytes | None:
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] == generation else None

    def put(self, key: Hashable, generation: int, body: bytes) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key] = (generation, body)
