"""Server-sent events for streamed completions, and the two ways a client's departure becomes an engine abort."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from fastapi.responses import Response

from ingot.server.access_log import CLIENT_CLOSED_REQUEST
from ingot.server.errors import error_body
from ingot.server.generation import ChoiceResult, Generation, collect

T = TypeVar("T")

DONE = "data: [DONE]\n\n"


def sse(payload: BaseModel | dict) -> str:
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"data: {data}\n\n"


def chunk_sse(chunk: BaseModel, include_usage: bool) -> str:
    """A streamed chunk. With ``stream_options.include_usage`` every chunk has ``usage``, null but in the last one,
    as OpenAI sends it; without, none has."""
    return f"data: {chunk.model_dump_json(exclude=None if include_usage else {'usage'})}\n\n"


def sse_error(message: str) -> str:
    """An error after the 200 has been sent can only travel in the stream (as vLLM sends it)."""
    return sse(error_body(message, type="server_error"))


class GenerationStream(StreamingResponse):
    """An SSE response that closes its generation however it ends: finished, failed, or cancelled by a disconnect
    (Starlette cancels the body iterator when the client goes away, possibly before it has even started)."""

    def __init__(self, events: AsyncIterator[str], generation: Generation) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.generation = generation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.generation.close()


class ClientDisconnected(Exception):
    """The client closed its connection before its (non-streaming) response was ready."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` while listening for the client's disconnect; stop waiting the moment the client leaves.

    The body has been read already, so the next ASGI message can only be ``http.disconnect``. Whatever ends the
    wait (a disconnect, or this handler being cancelled at shutdown), ``work`` is cancelled with it.
    """
    task = asyncio.ensure_future(work)
    listener = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, listener}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        listener.cancel()
        task.cancel()  # a no-op when it has finished
    if not task.done() or task.cancelled():
        raise ClientDisconnected
    return task.result()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def run_generation(
    request: Request, generation: Generation, events: AsyncIterator[str] | None
) -> Response | list[ChoiceResult]:
    """Start ``generation``; stream ``events`` if given, else wait for every choice (aborting if the client leaves)."""
    generation.start()
    if events is not None:
        return GenerationStream(events, generation)
    try:
        return await unless_disconnected(request, collect(generation))
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    finally:
        generation.close()
