"""Request bodies other than file uploads are JSON documents of bounded size: a larger one is refused
with 413 before it is read into memory (by Content-Length), or as soon as it passes the bound (chunked)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_JSON_BODY", "BodyLimit"]

MAX_JSON_BODY = 4 * 1024 * 1024  # an evaluation: details 1 MB, preview and contact sheet; the rest far smaller
UNBOUNDED = ("/api/v1/uploads",)  # streamed to disk under the server's own upload limit


def _refusal(limit: int) -> tuple[dict[str, Any], bytes]:
    body = json.dumps({"error": {"code": "too_large", "message": f"a request body is at most {limit:,} bytes",
                                 "hint": "upload files with POST /api/v1/uploads"}}).encode()  # fmt: skip
    start = {"type": "http.response.start", "status": 413,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}  # fmt: skip
    return start, body


class BodyLimit:
    def __init__(self, app: Any, limit: int = MAX_JSON_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in UNBOUNDED:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send)
                return
        seen = 0
        over = False

        async def bounded_receive() -> dict[str, Any]:
            # past the bound, the app is told the body ended (so nothing more is read into memory) and
            # whatever it answers is replaced by the 413
            nonlocal seen, over
            if over:
                return {"type": "http.request", "body": b"", "more_body": False}
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._refuse(send)

        await self.app(scope, bounded_receive, guarded_send)

    async def _refuse(self, send: Any) -> None:
        start, body = _refusal(self.limit)
        await send(start)
        await send({"type": "http.response.body", "body": body})
