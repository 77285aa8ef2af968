"""Running the app with uvicorn (one process; request handlers run in its thread pool).

The HTTP protocol closes connections that do not finish their headers in time and caps the number
of open connections (:mod:`.protocol`); the app itself limits bodies and running requests.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from ..optional import require
from .protocol import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS, guarded_protocol
from .security import is_loopback

log = logging.getLogger(__name__)


def build_server(
    app: FastAPI,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    timeout_keep_alive: int = 5,
):
    """A ``uvicorn.Server`` for ``app`` (not started: ``server.run()``, or ``server.run(sockets=[s])``)."""
    uvicorn = require("uvicorn", extra="serve", purpose="serving")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=guarded_protocol(header_timeout_s=header_timeout_s, max_connections=max_connections),
        limit_concurrency=None,  # uvicorn's counts idle connections too: RequestLimits counts requests
        timeout_keep_alive=timeout_keep_alive,
        server_header=False,
    )
    return uvicorn.Server(config)


def run_server(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Serve ``app`` until interrupted; warn when a non-loopback address is bound without a token."""
    if not is_loopback(host) and not getattr(app.state, "token_required", False):
        log.warning(
            "serving on %s without an access token: anyone who can reach this address can search and "
            "view the indexed photos (set a token: serve --token / CLIPFORGE_TOKEN)",
            host,
        )
    build_server(app, host=host, port=port, **options).run()
