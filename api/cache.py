"""Per-process caches that keep the hot read path (resolve) off the database.

- ``AuthCache``: a presented token's principal for a few seconds, checked again in the background in
  the last half of that time, and once for a burst of callers. A revocation through this process
  clears it at once; other worker processes see it within ``ttl`` seconds.
- ``Generation``: the event log's newest id, pushed by a watcher on the database's change signal (and
  re-read at once after a write through this process). Every state change appends an event, so a
  cached answer tagged with the generation it was computed at is valid exactly while the generation
  stays the same; the change feed's long polls wait on it too.
- ``ResponseCache``: serialized answers keyed by caller and request, tagged with a generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Hashable
from datetime import datetime, timezone

from starlette.concurrency import run_in_threadpool

from registry.db.watch import ChangeSignal
from registry.domain.access import Principal


class AuthCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._checking: dict[str, asyncio.Future[Principal]] = {}

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> Principal | None:
        entry = self._entries.get(self._key(token))
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def lookup(self, token: str) -> tuple[Principal | None, bool]:
        """The remembered principal (``None`` when there is none), and whether it is due to be checked
        again: in the last half of its time, so that one caller re-checks it in the background while
        the others keep being answered, instead of every caller missing at once when it runs out."""
        entry = self._entries.get(self._key(token))
        now = time.monotonic()
        if entry is None or entry[1] <= now:
            return None, True
        return entry[0], entry[1] - now < self.ttl / 2

    async def check(self, token: str, authenticate: Callable[[], Principal]) -> Principal:
        """``authenticate()`` (in the thread pool) once for all the callers presenting ``token`` now:
        a burst of requests with one token costs one database read, not one each."""
        key = self._key(token)
        task = self._checking.get(key)
        if task is None:
            task = asyncio.ensure_future(run_in_threadpool(authenticate))
            self._checking[key] = task
            task.add_done_callback(lambda _: self._checking.pop(key, None))
        return await asyncio.shield(task)

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

    def forget(self, token: str) -> None:
        self._entries.pop(self._key(token), None)

    def clear(self) -> None:
        self._entries.clear()


class Generation:
    """The event log's newest id as this process knows it.

    Served by a watcher thread (``watch()``, started with the server): it blocks on the database's
    change signal (``registry.db.watch``: LISTEN on PostgreSQL, a stat of the files on SQLite), re-reads
    the head once when it fires, and wakes the change feed's waiters; neither they nor the resolve path
    query the database while nothing changes. A write through this process marks the value stale, so
    the very next reader re-reads it. Without a watcher (an app driven without its lifespan), the head
    is re-read on demand at most every ``interval`` seconds, as before.
    """

    def __init__(
        self, read: Callable[[], int], interval: float, signal: Callable[[], ChangeSignal] | None = None
    ) -> None:
        self._read = read
        self.interval = interval
        self._signal_factory = signal
        self._value = -1
        self._stale = True
        self._checked = 0.0
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._thread: threading.Thread | None = None
        self._signal: ChangeSignal | None = None
        self._stop = threading.Event()
        self._listeners: list[Callable[[], None]] = []
        self.reads = 0  # how often the head was read (for tests and the benchmark)

    @property
    def watching(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def due(self) -> bool:
        """True when ``current`` would read the database (so an async caller can do it off the loop)."""
        if self._stale:
            return True
        return not self.watching and time.monotonic() - self._checked >= self.interval

    def current(self) -> int:
        if self.due():
            with self._lock:
                if self.due():
                    self._stale = False  # before the read: a change landing during it marks it again
                    value = self._read()
                    self.reads += 1
                    self._checked = time.monotonic()
                    self._set(value)
        return self._value

    def invalidate(self) -> None:
        self._stale = True
        self._wake()  # parked waiters look again (the first re-reads; the rest see its answer)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (quick, from whichever thread read the head) each time the head moves."""
        self._listeners.append(listener)

    def _set(self, value: int) -> None:
        if value != self._value:
            self._value = value
            self._wake()
            for listener in self._listeners:
                listener()

    def _wake(self) -> None:
        for loop, event in list(self._waiters):
            with contextlib.suppress(RuntimeError):  # a loop that has closed
                loop.call_soon_threadsafe(event.set)

    # -- the watcher -------------------------------------------------------------------------------

    def watch(self) -> None:
        """Start the watcher thread (once); a no-op without a change signal."""
        with self._lock:
            if self._signal_factory is None or self.watching:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="wanlora-change-watch", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        assert self._signal_factory is not None
        self._signal = signal = self._signal_factory()
        try:
            self._stale = True
            self.current()
            while not self._stop.is_set():
                if signal.wait(1.0) and not self._stop.is_set():
                    self._stale = True
                    try:
                        self.current()
                    except Exception:  # the database is away for now: readers retry on demand
                        self._stale = True
                        self._stop.wait(0.5)
        finally:
            signal.close()

    def close(self) -> None:
        self._stop.set()
        if self._signal is not None:
            self._signal.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        self._thread = None

    async def wait_past(self, since: int, timeout: float) -> int:
        """The head once it is past ``since``, or after ``timeout`` seconds: parked on an event the
        watcher sets, not on a loop of queries."""
        self.watch()
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        self._waiters.add(entry)
        deadline = loop.time() + timeout
        try:
            while True:
                event.clear()
                current = await run_in_threadpool(self.current) if self.due() else self._value
                left = deadline - loop.time()
                if current > since or left <= 0:
                    return current
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), left)
        finally:
            self._waiters.discard(entry)


class ResponseCache:
    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._entries: dict[Hashable, tuple[int, bytes]] = {}
        self._computing: dict[tuple[Hashable, int], asyncio.Future[bytes]] = {}

    def get(self, key: Hashable, generation: int) -> bytes | None:
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] == generation else None

    def put(self, key: Hashable, generation: int, body: bytes) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key] = (generation, body)

    async def fill(self, key: Hashable, generation: int, compute: Callable[[], bytes]) -> bytes:
        """The answer for ``key`` at ``generation``: cached, or computed once (in the thread pool) for
        every caller asking now. When the log moves, the callers in flight share one computation
        instead of each running its own (what made reads stall while writes ran)."""
        body = self.get(key, generation)
        if body is not None:
            return body
        flight = (key, generation)
        task = self._computing.get(flight)
        if task is None:
            task = asyncio.ensure_future(run_in_threadpool(compute))
            self._computing[flight] = task
            task.add_done_callback(lambda done: self._landed(flight, done))
        return await asyncio.shield(task)

    def _landed(self, flight: tuple[Hashable, int], task: asyncio.Future[bytes]) -> None:
        self._computing.pop(flight, None)
        if not task.cancelled() and task.exception() is None:
            self.put(flight[0], flight[1], task.result())
