"""What one request may cost: body size, how long its body may take, and how many run at once.

:class:`RequestLimits` is ASGI middleware placed inside the app's error handling:

* a declared ``Content-Length`` over the limit is refused (413) before a byte is read; a body
  streamed without one is cut off (413) as soon as it passes the limit. JSON bodies get a small
  limit (``max_json_bytes``), uploads the upload limit;
* a client that stops sending its body is answered 408 after ``body_timeout_s`` of silence;
* at most ``max_active`` requests run at once (503 beyond): a request counts once its body is in,
  so clients that hang on half-sent requests never lock out legitimate ones.

Connections that never finish their headers are the HTTP protocol's business (:mod:`.protocol`).
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException

from .security import json_error

DEFAULT_MAX_JSON_BYTES = 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 10.0
DEFAULT_MAX_ACTIVE = 256


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
        has_body = (declared is not None and declared != b"0") or b"transfer-encoding" in headers
        counted = False
        received = 0
        body_done = not has_body

        def enter() -> None:
            nonlocal counted
            if self.active >= self.max_active:
                raise HTTPException(503, f"server busy ({self.max_active} requests in progress): retry shortly")
            self.active += 1
            counted = True

        async def limited_receive():
            nonlocal received, body_done
            if body_done:  # after the body: e.g. waiting for a disconnect, no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                raise HTTPException(408, f"request body not received within {self.body_timeout_s:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"request body exceeds the {limit}-byte limit")
                if not message.get("more_body", False):
                    body_done = True
                    enter()
            return message

        try:
            if not has_body:
                try:
                    enter()
                except HTTPException as e:
                    return await json_error(send, e.status_code, e.detail)
            await self.app(scope, limited_receive, send)
        finally:
            if counted:
                self.active -= 1
