"""A process killed mid-write leaves no partial state: no version row, no partial LoRA file."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from registry.backends.local import Wanlora
from registry.blobs.local import LocalStore
from registry.db.engine import Database
from registry.sync.comfyui import TMP_PREFIX
from tests.helpers import make, register

# Big enough for several chunks: 30 blocks x 4 modules x 2 matrices of 3072x64 fp16 = 94 MB.
BIG = {"rank": 64, "blocks": 30}

CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from registry.domain.register import RegisterRequest
    from registry.backends.local import Wanlora
    from registry.db.engine import Database
    from registry.blobs.local import LocalStore
    from registry.sync.comfyui import sync_comfyui

    db_url, store_dir, mode, arg = sys.argv[1:5]
    wl = Wanlora(db=Database(db_url), store=LocalStore(Path(store_dir)), actor="child")

    def progress(*args):
        done = args[-2]
        if done > 0:
            print("MID", flush=True)
            time.sleep(60)  # the parent kills us here, half-way through the write

    if mode == "register":
        req = RegisterRequest(project="default", lora="sarah", file=Path(arg), changelog="big", version="2.0.0")
        wl.register(req, progress=progress)
    else:
        with wl.registry(write=False) as reg:
            targets = reg.current_targets()
        sync_comfyui(targets, wl.store, Path(arg), progress=progress)
    print("FINISHED", flush=True)
    """
)


def run_and_kill(db: Database, store: LocalStore, mode: str, arg: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, db.url, str(store.root), mode, str(arg)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "MID", line
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def test_register_killed_mid_write_leaves_no_version(
    wl: Wanlora, db: Database, store: LocalStore, tmp_path: Path
) -> None:
    register(wl, tmp_path, version="1.0.0", seed=1)
    big = make(tmp_path, "big", seed=2, **BIG)
    run_and_kill(db, store, "register", big)
    with wl.registry(write=False) as reg:
        assert [v.version for v in reg.get_lora(project="default", name="sarah").versions] == ["1.0.0"]
        assert [e.kind for e in reg.history(project="default", name="sarah")] == ["registered", "lora_created"]
    objects = [p for p in (store.root / "sha256").rglob("*") if p.is_file()]
    assert len(objects) == 1  # only 1.0.0's file; the partial write is a temp file, never an object
    # and the same registration succeeds afterwards
    assert register(wl, tmp_path, version="2.0.0", file=big).version == "2.0.0"


def test_sync_killed_mid_copy_leaves_old_or_new_file(
    wl: Wanlora, db: Database, store: LocalStore, tmp_path: Path
) -> None:
    comfy = tmp_path / "ComfyUI"
    old = register(wl, tmp_path, version="1.0.0", seed=1, file=make(tmp_path, "old", seed=1, **BIG))
    new = register(wl, tmp_path, version="1.1.0", seed=2, file=make(tmp_path, "new", seed=2, **BIG))
    with wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.0.0")
    from registry.sync.comfyui import sync_comfyui

    with wl.registry(write=False) as reg:
        sync_comfyui(reg.current_targets(), store, comfy)
    with wl.registry() as reg:
        reg.promote(project="default", name="sarah", version="1.1.0")
    target = comfy / "models/loras/wanlora/default/character/sarah.safetensors"
    run_and_kill(db, store, "sync", comfy)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == old.files[0].sha256
    leftovers = [p for p in target.parent.iterdir() if p.name.startswith(TMP_PREFIX)]
    assert leftovers, "the kill should have caught the copy half-way"
    with wl.registry(write=False) as reg:
        report = sync_comfyui(reg.current_targets(), store, comfy)
    assert report.copied == ["default/character/sarah.safetensors"]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == new.files[0].sha256
    assert not [p for p in target.parent.iterdir() if p.name.startswith(TMP_PREFIX)]
