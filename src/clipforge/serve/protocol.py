"""uvicorn's HTTP/1.1 protocol with two guards against clients that connect and never finish.

* ``header_timeout_s``: a connection must complete a request's headers within this many seconds of
  connecting (or of its previous response); otherwise it is closed. Idle and half-sent
  connections (slowloris) therefore cannot pile up.
* ``max_connections``: connections beyond this many are closed at once, so the process never runs
  out of file descriptors. Unlike uvicorn's ``limit_concurrency`` it does not answer 503 to real
  requests because of idle sockets; how many requests *run* at once is :mod:`.limits`' business.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 2048


def guarded_protocol(
    *, header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S, max_connections: int = DEFAULT_MAX_CONNECTIONS
) -> type[asyncio.Protocol]:
    """An ``H11Protocol`` subclass with the two guards (pass it as uvicorn's ``http=``)."""

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.close()
                return
            self._arm_header_timer()

        def connection_lost(self, exc) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:  # a request's headers arrived
                self._cancel_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._arm_header_timer()  # the next request's headers get the same deadline

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol
