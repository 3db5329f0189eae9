"""The HTTP transport of the remote backend: one client, server errors turned back into the same
``WanloraError`` subclasses, URL paths, and verified streaming downloads."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from registry.blobs.base import CHUNK, VerifyingReader
from registry.domain.errors import (
    AlreadyExists,
    Conflict,
    GateRefused,
    IntegrityError,
    InvalidFile,
    InvalidInput,
    NotFound,
    PermissionDenied,
    SchemaOutdated,
    Unauthenticated,
    WanloraError,
)

__all__ = ["Http", "RemoteStore", "lora_path", "project_path", "raise_for"]

_ERRORS: dict[str, type[WanloraError]] = {
    cls.code: cls
    for cls in (
        NotFound, AlreadyExists, InvalidInput, InvalidFile, PermissionDenied, Unauthenticated,
        IntegrityError, Conflict, GateRefused, SchemaOutdated,
    )
}  # fmt: skip


def raise_for(response: httpx.Response) -> None:
    if response.is_success or response.status_code == 304:
        return
    try:
        error = response.json()["error"]
        cls = _ERRORS.get(error.get("code", ""), WanloraError)
        raise cls(error.get("message") or response.reason_phrase, hint=error.get("hint"))
    except (ValueError, KeyError, TypeError):
        raise WanloraError(f"server answered {response.status_code} {response.reason_phrase}") from None


class _PlainHttp(httpx.HTTPTransport):
    """The transport of a plain-HTTP server: no TLS ever, so none of its set-up (loading the CA bundle
    takes about 90 ms on the 2-core VM, every command). An https URL (a redirect to a presigned
    download) is not for it: the client sends those through a verifying transport built on first use."""

    def __init__(self) -> None:
        super().__init__(verify=False)  # never used: it refuses anything but http

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"{request.url.scheme} is not plain HTTP")
        return super().handle_request(request)


class _OnFirstUse(httpx.BaseTransport):
    """httpx's default, verifying transport, built on the first request that needs it."""

    def __init__(self) -> None:
        self._transport: httpx.HTTPTransport | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._transport is None:
            self._transport = httpx.HTTPTransport()
        return self._transport.handle_request(request)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _transports(base: str) -> dict[str, Any]:
    """For a plain-HTTP server with no proxy configured, a transport without TLS, and https (a
    redirect) through the verifying one, built when first needed; else httpx's defaults."""
    from httpx._utils import get_environment_proxies

    if not base.startswith("http://") or get_environment_proxies():
        return {}
    return {"transport": _PlainHttp(), "mounts": {"https://": _OnFirstUse()}}


class Http:
    def __init__(self, server: str, token: str | None, timeout: float = 60.0) -> None:
        self.base = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(
            base_url=self.base, headers=headers, timeout=timeout, follow_redirects=True, **_transports(self.base)
        )

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """The server's answer, its errors raised as the registry's own."""
        try:
            response = self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise WanloraError(f"cannot reach {self.base}: {exc}", hint="check --server / WANLORA_SERVER") from exc
        raise_for(response)
        return response

    def call(self, method: str, path: str, **kw: Any) -> Any:
        response = self.request(method, path, **kw)
        return (
            response.json()
            if response.headers.get("content-type", "").startswith("application/json")
            else response.text
        )


def project_path(project: str) -> str:
    return f"/api/v1/projects/{quote(project, safe='')}"


def lora_path(project: str, name: str) -> str:
    return f"{project_path(project)}/loras/{quote(name, safe='')}"


_JOINED = 1 << 20


def sent_as_stored(response: httpx.Response) -> bool:
    """Whether the body comes as the bytes it stands for (no Content-Encoding a proxy added)."""
    return response.headers.get("content-encoding", "").strip().lower() in ("", "identity")


class _StreamBody:
    """An HTTP response body as ``read``: each call returns the next chunk as it arrives (no copying
    into a buffer beyond joining the socket's pieces), which is all a verifying, streaming reader needs. A body sent as it is stored (no
    Content-Encoding) is taken as the socket delivers it: httpx's re-chunking into even sizes cost more
    than hashing the bytes. An encoded one (a proxy that compresses) is decoded first."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = response.iter_raw() if sent_as_stored(response) else response.iter_bytes(1 << 20)

    def read(self, n: int = CHUNK) -> bytes:
        """The next MiB or so (the socket's pieces joined: one copy), or ``b""`` at the end."""
        parts, size = [], 0
        for chunk in self._chunks:
            parts.append(chunk)
            size += len(chunk)
            if size >= _JOINED:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        self._response.close()


class RemoteStore:
    """Reads artifacts from the server (or the presigned URL it redirects to), verified by sha256."""

    def __init__(self, http: Http) -> None:
        self.http = http
        self.url = f"{http.base}/api/v1/artifacts"
        self.client: str | None = None  # the host that pulls: a trial's candidate is served to its share

    def open(self, sha256: str) -> VerifyingReader:
        params = {"client": self.client} if self.client else None
        request = self.http.client.build_request("GET", f"/api/v1/artifacts/{sha256}", params=params)
        response = self.http.client.send(request, stream=True)
        if not response.is_success:
            response.read()
            raise_for(response)
        # The length on the wire is the stored length unless a proxy compressed the body; then only the
        # digest is checked (it fixes the length as well).
        size = int(response.headers.get("content-length", "-1")) if sent_as_stored(response) else -1
        return VerifyingReader(_StreamBody(response), sha256, size)  # type: ignore[arg-type]
