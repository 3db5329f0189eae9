"""Leftovers of killed processes go (issue 11, item 11 in part): a killed writer's temporary file at
the store's next start, and uploads nobody registered when the server starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from registry.blobs.local import _HOST, LocalStore


def test_a_killed_writers_temp_file_goes_at_the_next_start_and_live_ones_stay(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "artifacts")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = store.tmp_dir / f"put-{_HOST}-{int(dead.stdout)}-abc"
    mine = store.tmp_dir / f"put-{_HOST}-{os.getpid()}-def"
    elsewhere = store.tmp_dir / "put-otherhost-1-ghi"  # another machine's writer on shared storage
    old = store.tmp_dir / "put-otherhost-2-jkl"
    for path in (gone, mine, elsewhere, old):
        path.write_bytes(b"x" * 1024)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    LocalStore(tmp_path / "artifacts")
    assert not gone.exists() and not old.exists() and mine.exists() and elsewhere.exists()


def test_uploads_nobody_registered_are_swept_when_the_server_starts(tmp_path: Path) -> None:
    from api import create_app
    from registry.settings import Settings

    uploads = tmp_path / "home" / "uploads"
    uploads.mkdir(parents=True)
    stale, fresh = uploads / "u_stale", uploads / "u_fresh"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"in flight")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    create_app(Settings(home=tmp_path / "home"), deliver_webhooks=False)
    assert not stale.exists() and fresh.exists()
