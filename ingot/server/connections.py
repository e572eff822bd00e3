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
    opening (or of the previous response), else 408 and close; a connection beyond ``max_connections`` is answered
    503 and closed at once, before it can send anything (uvicorn's own cap answers in plain text, after the head)."""

    read_timeout: float = 30.0
    max_connections: int = 256

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            message = f"the server has {self.max_connections} connections open; retry later"
            transport.write(raw_error(503, "Service Unavailable", message, "server_error", "too_many_connections"))
            transport.close()
            return
        self._arm_head_deadline()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self._head_deadline is not None and not self.cycle.response_complete:
            self._disarm_head_deadline()  # the head has arrived; the body's deadline is the app's

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.read_timeout, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if getattr(self, "_head_deadline", None) is not None:
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
