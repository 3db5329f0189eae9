"""Many threads promoting and rolling back one LoRA: exactly one current at every moment, and an event log
that replays to the final state, on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from registry.backends.local import Wanlora
from registry.domain.errors import Conflict
from tests.conftest import BACKENDS
from tests.helpers import make, register

pytestmark = pytest.mark.parametrize("database_url", BACKENDS, indirect=True)

THREADS = 8
OPS = 12


def test_concurrent_promote_and_rollback(wl: Wanlora, tmp_path: Path) -> None:
    versions = [f"1.{i}.0" for i in range(THREADS * OPS // 2 + 2)]
    for i, v in enumerate(versions):
        register(wl, tmp_path, version=v, seed=i, file=make(tmp_path, f"v{i}", seed=i, rank=1, blocks=1))
    with wl.registry() as reg:
        reg.promote(project="default", name="sarah", version=versions[0])
    pending = list(versions[1:])
    lock = threading.Lock()
    stop = threading.Event()
    violations: list[int] = []
    errors: list[BaseException] = []

    def observer() -> None:
        while not stop.is_set():
            with wl.db.session(write=False) as s:
                n = s.exec(text("SELECT count(*) FROM versions WHERE status = 'current'")).one()[0]  # type: ignore[call-overload]
            if n != 1:
                violations.append(n)

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(OPS):
                with lock:
                    candidate = pending.pop() if pending and rnd.random() < 0.6 else None
                try:
                    with wl.registry() as reg:
                        if candidate:
                            reg.promote(project="default", name="sarah", version=candidate, reason=f"t{seed}")
                        else:
                            reg.rollback(project="default", name="sarah", reason=f"t{seed}")
                except Conflict:
                    pass  # nothing left to roll back to: a legal refusal
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    watcher = threading.Thread(target=observer)
    watcher.start()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    watcher.join()
    assert not errors, errors
    assert not violations, f"saw {set(violations)} current versions at some moment"

    with wl.registry(write=False) as reg:
        events = list(reversed(reg.history(project="default", name="sarah")))
        final = {v.version: v.status.value for v in reg.get_lora(project="default", name="sarah").versions}
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "event sequence has gaps"
    replay: dict[str, str] = {}
    for e in events:
        if e.to_status is None:
            continue
        assert replay.get(e.version) == e.from_status, f"event {e.seq} starts from a state the log never reached"
        replay[e.version or ""] = e.to_status
        assert sum(1 for s in replay.values() if s == "current") <= 1
    assert replay == final
    assert sum(1 for e in events if e.kind in ("promoted", "restored")) > THREADS  # real contention happened
