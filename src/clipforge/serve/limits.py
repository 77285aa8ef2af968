"""What one request may cost: body size, how long its body may take, and how many run at once.

:class:`RequestLimits` is ASGI middleware placed inside the app's error handling:

* a declared ``Content-Length`` over the limit is refused (413) before a byte is read; a body
  streamed without one is cut off (413) as soon as it passes the limit. JSON bodies get a small
  limit (``max_json_bytes``), uploads the upload limit;
* the body is read whole here, before routing: a client that stops sending it costs a waiting
  coroutine only, and is answered 408 after ``body_timeout_s`` of silence;
* at most ``max_active`` requests run at once (503 beyond): a request counts once its body is in,
  so clients that hang on half-sent requests never lock out legitimate ones.

Connections that never finish their headers are the HTTP protocol's business (:mod:`.protocol`).
"""

from __future__ import annotations

import asyncio

from .security import json_error

DEFAULT_MAX_JSON_BYTES = 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 10.0
DEFAULT_MAX_ACTIVE = 256


async def _within(receive, seconds: float):
    """``await receive()`` or ``asyncio.TimeoutError`` after ``seconds``."""
    if hasattr(asyncio, "timeout"):  # Python 3.11+: no extra task per message, unlike wait_for
        async with asyncio.timeout(seconds):
            return await receive()
    return await asyncio.wait_for(receive(), seconds)


class RequestLimits:
    def __init__(
        self,
        app,
        *,
        max_upload_bytes: int,
        max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
        max_active: int = DEFAULT_MAX_ACTIVE,
    ) -> None:
        self.app = app
        self.max_upload_bytes, self.max_json_bytes = max_upload_bytes, max_json_bytes
        self.body_timeout_s, self.max_active = body_timeout_s, max_active
        self.active = 0

    def _limit(self, headers: dict[bytes, bytes]) -> int:
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        return self.max_json_bytes if kind == b"application/json" else self.max_upload_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        limit = self._limit(headers)
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await json_error(send, 400, f"invalid Content-Length {declared.decode('latin-1')!r}")
            if size > limit:
                return await json_error(send, 413, f"request body of {size} bytes exceeds the {limit}-byte limit")
        body = b""
        if (declared is not None and declared != b"0") or b"transfer-encoding" in headers:
            # The whole body first, before any routing or parsing: a client that stops sending
            # costs one waiting coroutine, never a request in the app.
            chunks, received = [], 0
            while True:
                try:
                    message = await _within(receive, self.body_timeout_s)
                except asyncio.TimeoutError:
                    return await json_error(send, 408, f"request body not received within {self.body_timeout_s:g} s")
                if message["type"] == "http.disconnect":
                    return  # the client is gone: nobody to answer
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    return await json_error(send, 413, f"request body exceeds the {limit}-byte limit")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
        if self.active >= self.max_active:
            return await json_error(send, 503, f"server busy ({self.max_active} requests in progress): retry shortly")
        self.active += 1
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: e.g. waiting for a disconnect, no deadline

        try:
            await self.app(scope, replay, send)
        finally:
            self.active -= 1
