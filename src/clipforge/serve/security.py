"""Who may talk to the service: a Host-header allow-list and an optional access token.

Both are plain ASGI middleware wrapped around the app.

* **Host allow-list.** A web page the user visits can point its own DNS name at 127.0.0.1 (DNS
  rebinding) and then read the API as "same origin"; the browser still sends the attacker's name
  in ``Host:``. Only the names in ``allowed_hosts`` (loopback by default) are served; ``"*"``
  turns the check off.
* **Token.** When a token is set every route needs it, as ``Authorization: Bearer TOKEN``, as the
  ``clipforge_token`` cookie, or once as ``?token=TOKEN`` in a browser URL (the answer then sets
  the cookie, ``HttpOnly; SameSite=Strict``, so the page, its images and its API calls carry it).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Iterable
from urllib.parse import parse_qs

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
TOKEN_ENV = "CLIPFORGE_TOKEN"
TOKEN_COOKIE = "clipforge_token"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only reaches this machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a ``Host:`` header, without port, brackets or trailing dot, lower-cased."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8000
        return header[1 : header.find("]")] if "]" in header else header
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return header.rstrip(".")


async def json_error(send, status: int, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HostAllowList:
    """Answer 400 to any request whose ``Host:`` is not in ``allowed_hosts``."""

    def __init__(self, app, *, allowed_hosts: Iterable[str] = LOOPBACK_HOSTS) -> None:
        self.app = app
        self.allowed = {host_name(h) for h in allowed_hosts}
        self.any = "*" in self.allowed

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self.any:
            return await self.app(scope, receive, send)
        raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        name = host_name(raw)
        if name not in self.allowed:
            return await json_error(
                send,
                400,
                f"Host {raw!r} is not allowed (allowed: {', '.join(sorted(self.allowed))}); "
                "the server's allowed_hosts (serve --allow-host) must name it",
            )
        return await self.app(scope, receive, send)


def _cookie(headers: dict[bytes, bytes]) -> str | None:
    for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        name, _, value = part.strip().partition("=")
        if name == TOKEN_COOKIE:
            return value
    return None


def check_token(token: str) -> str:
    """``token`` if usable (cookie-safe, not trivially short), else ValueError."""
    if not isinstance(token, str) or not re.fullmatch(r"[A-Za-z0-9._~+/=-]{8,}", token):
        raise ValueError("token must be at least 8 characters of letters, digits and ._~+/=-")
    return token


class TokenGate:
    """Answer 401 to any request that does not carry ``token`` (bearer header, cookie or query)."""

    def __init__(self, app, *, token: str) -> None:
        self.app = app
        self.token = check_token(token).encode()

    def _ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth[:7].lower() == "bearer " and self._ok(auth[7:].strip()):
            return await self.app(scope, receive, send)
        if self._ok(_cookie(headers)):
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if self._ok((query.get("token") or [None])[0]):
            cookie = f"{TOKEN_COOKIE}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict"

            async def send_with_cookie(message):
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message["headers"], (b"set-cookie", cookie.encode())]}
                await send(message)

            return await self.app(scope, receive, send_with_cookie)
        return await json_error(
            send,
            401,
            "this server needs its access token: send 'Authorization: Bearer TOKEN' "
            "(or open the page once as /?token=TOKEN)",
            [(b"www-authenticate", b"Bearer")],
        )
