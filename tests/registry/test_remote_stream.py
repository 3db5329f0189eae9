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
from pathlib import Path

import httpx
import pytest

from registry.backends.http import Http, RemoteStore
from registry.domain.errors import IntegrityError, WanloraError

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


class _Redirect(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        self.send_response(307)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_a_plain_http_server_loads_no_tls_yet_a_redirect_to_https_is_still_verified(tmp_path: Path) -> None:
    """No CA bundle is loaded for an http:// server (tens of ms each command); an https URL it
    redirects to (a presigned download) goes through httpx's verifying transport: a self-signed
    certificate is refused."""
    import ssl
    import subprocess

    from registry.backends.http import _OnFirstUse, _PlainHttp

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)  # fmt: skip
    tls = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    _Redirect.target = f"https://127.0.0.1:{tls.server_address[1]}/artifacts/{SHA}"
    plain = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    for httpd in (tls, plain):
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        http = Http(f"http://127.0.0.1:{plain.server_address[1]}", None)
        assert isinstance(http.client._transport, _PlainHttp)
        verifying = next(t for p, t in http.client._mounts.items() if p.scheme == "https")
        assert isinstance(verifying, _OnFirstUse) and verifying._transport is None  # nothing built yet
        with pytest.raises(WanloraError) as refused:
            http.request("GET", "/artifacts/x")
        assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
        assert verifying._transport is not None
        with pytest.raises(httpx.UnsupportedProtocol):  # the plain transport never speaks TLS itself
            _PlainHttp().handle_request(httpx.Request("GET", _Redirect.target))
    finally:
        for httpd in (tls, plain):
            httpd.shutdown()
            httpd.server_close()


def test_with_a_proxy_configured_the_client_keeps_httpx_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from registry.backends.http import _PlainHttp

    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert not isinstance(Http("http://127.0.0.1:1", None).client._transport, _PlainHttp)
    monkeypatch.delenv("HTTP_PROXY")
    assert isinstance(Http("http://127.0.0.1:1", None).client._transport, _PlainHttp)
    assert not isinstance(Http("https://127.0.0.1:1", None).client._transport, _PlainHttp)
