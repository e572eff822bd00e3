"""The HTTP connection itself, below the app: a deadline for each request's head, and a cap on open connections.

uvicorn times out only idle keep-alive connections; a client that sends its headers a byte at a time would hold a
connection (and a slot of the cap) forever. The body's deadline is kept by ``BodyLimitMiddleware``, which reads it.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ingot.server.errors import error_body


def raw_error(status: int, reason: str, message: str, type: str, code: str) -> bytes:
    """A whole HTTP/1.1 error response in OpenAI's shape, for answering before any request reached the app."""
    body = json.dumps(error_body(message, type=type, code=code)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus: a request's head must arrive within ``read_timeout`` seconds of the connection
    opening or of the head's first byte, else 408 and close (between requests, uvicorn's keep-alive timeout closes an
    idle connection); a connection beyond ``max_connections`` is answered 503 and closed at once, before it can send
    anything (uvicorn's own cap answers in plain text, and only once the head has arrived)."""

    read_timeout: float = 30.0
    max_connections: int = 256
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            message = f"the server has {self.max_connections} connections open; retry later"
            transport.write(raw_error(503, "Service Unavailable", message, "server_error", "too_many_connections"))
            transport.close()
            return
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        if self._head_deadline is None and self._between_requests():  # the next request's first bytes
            self._arm_head_deadline()
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if not self._between_requests():
            self._disarm_head_deadline()  # the head has arrived; the body's deadline is the app's

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.read_timeout, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        message = f"the request's headers did not arrive within {self.read_timeout:g} seconds"
        self.transport.write(raw_error(408, "Request Timeout", message, "invalid_request_error", "request_timeout"))
        self.transport.close()


def guarded_protocol(read_timeout: float, max_connections: int) -> type[GuardedH11Protocol]:
    """The protocol class with these limits, for ``uvicorn.Config(http=...)``."""
    return type(
        "GuardedH11Protocol", (GuardedH11Protocol,), {"read_timeout": read_timeout, "max_connections": max_connections}
    )
