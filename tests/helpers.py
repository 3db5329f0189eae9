"""Small builders shared by the tests."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from registry.backends.local import Wanlora
from registry.domain.register import RegisterRequest
from registry.domain.schemas import VersionPublic
from registry.files.synth import synth_lora

SINGLE = "wan2.2-ti2v-5b"  # one expert: one file per version
PAIR = "wan2.2-t2v-a14b"  # two experts: a high/low-noise pair per version


def make(tmp: Path, name: str, **kw: Any) -> Path:
    kw.setdefault("base_model", SINGLE)
    return synth_lora(tmp / f"{name}.safetensors", **kw)


def register(
    wl: Wanlora, tmp: Path, *, lora: str = "sarah", version: str | None = "1.0.0", seed: int = 0, **kw: Any
) -> VersionPublic:
    file = kw.pop("file", None) or make(tmp, f"{lora}-{seed}", seed=seed)
    req = RegisterRequest(
        project=kw.pop("project", "default"),
        lora=lora,
        file=file,
        changelog=kw.pop("changelog", f"seed {seed}"),
        version=version,
        category=kw.pop("category", "character"),
        base_model=kw.pop("base_model", SINGLE),
        **kw,
    )
    return wl.register(req)


class Receiver:
    """A webhook receiver on loopback: records every POST (headers, body) and answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
