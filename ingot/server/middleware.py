"""Checks that run before routing, so a request that fails them costs the server nothing: the API key, then the
body size (a body is read here, up to the limit, before any handler sees it). And the last resort after routing:
an unexpected exception becomes a generic 500."""

from __future__ import annotations

import asyncio
import hmac
import logging

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingot.server.errors import APIError, error_response
from ingot.server.page import ASSETS_PREFIX, PAGE_PATHS

log = logging.getLogger("ingot.server")

# Open without a key: probes, scrapers and the version never carry one (vLLM keeps them open too); the playground
# page holds no data and asks for the key itself.
PUBLIC_PATHS = frozenset({"/health", "/metrics", "/version"}) | PAGE_PATHS


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Checked first: a lifespan scope has no path (a KeyError there would silently switch uvicorn's lifespan off).
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["path"].startswith(ASSETS_PREFIX):
            await self.app(scope, receive, send)
            return
        scheme, _, key = Headers(scope=scope).get("authorization", "").strip().partition(" ")
        # The scheme is case-insensitive (RFC 9110); the key is compared in constant time, so it cannot be guessed a
        # byte at a time.
        if scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), self.expected):
            await self.app(scope, receive, send)
            return
        error = APIError(
            401, "invalid or missing API key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
        )
        await error_response(error)(scope, receive, send)


class BodyLimitMiddleware:
    """413 for a body over the limit, whether its Content-Length says so or it is sent in chunks that add up to it;
    408 (and the connection closed) for a body that has not all arrived ``read_timeout`` seconds after its headers."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        body = bytearray()
        try:
            async with asyncio.timeout(self.read_timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # the client left while sending; nobody to answer
                        return
                    body += message.get("body", b"")
                    if len(body) > self.max_bytes:
                        await self._too_large(scope, receive, send)
                        return
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            message = f"the request body did not arrive within {self.read_timeout:g} seconds"
            timeout = APIError(408, message, code="request_timeout", headers={"Connection": "close"})
            await error_response(timeout)(scope, receive, send)
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = APIError(413, f"the request body is larger than {self.max_bytes} bytes", code="request_too_large")
        await error_response(error)(scope, receive, send)


class InternalErrorMiddleware:
    """A bug answers 500 in OpenAI's shape, revealing nothing, and its traceback is logged here once.

    (A Starlette handler for ``Exception`` re-raises after answering, so the server would log it a second time.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if scope["type"] == "http" and not started:  # else the status has gone out; the stream just ends
                await error_response(APIError(500, "internal server error", type="server_error"))(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body as one message, then the client's own messages (so a disconnect is still seen)."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
