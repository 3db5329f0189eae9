"""Downloads from a server are read as the socket delivers them and hashed beside the caller's writes;
a body a proxy compressed is decoded first and checked by its digest alone (its length on the wire is not the
stored length). A real HTTP server on loopback serves the bytes."""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from registry.backends.http import Http, RemoteStore
from registry.domain.errors import IntegrityError

BODY = os.urandom(3 * 1024 * 1024 + 17)  # several joined reads, and a short last one
SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        encoding = "gzip" if "gzip" in self.path else None
        body = BODY[:-1] + b"x" if "corrupt" in self.path else BODY
        payload = gzip.compress(body, compresslevel=1) if encoding else body
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _read_all(base: str) -> bytes:
    store = RemoteStore(Http(base, None))
    with store.open(SHA) as reader:
        out = bytearray()
        while chunk := reader.read():
            out += chunk
    return bytes(out)


@pytest.mark.parametrize("prefix", ["", "/gzip"])
def test_a_download_is_the_stored_bytes_whether_or_not_a_proxy_compressed_it(server: str, prefix: str) -> None:
    assert _read_all(server + prefix) == BODY


@pytest.mark.parametrize("prefix", ["/corrupt", "/corrupt/gzip"])
def test_a_download_that_is_not_the_stored_bytes_is_refused(server: str, prefix: str) -> None:
    with pytest.raises(IntegrityError, match="corrupt"):
        _read_all(server + prefix)
