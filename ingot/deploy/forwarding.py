"""An HTTP request handed from the ingress to a replica, and run there through ingot's own app.

Ray's HTTP proxy hands a request to a deployment before its body is read, so a router placing it by its prompt
never sees the prompt. The ingress therefore reads the body, keys the prompt's prefix, and passes the whole request
to an engine replica through a deployment handle, whose router then sees it. The replica runs it through the same
FastAPI app `ingot serve` runs (every route, check and error shape), and streams the app's ASGI messages back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message

from ingot.deploy.prefixes import block_keys

GENERATION_PATHS = frozenset({"/v1/completions", "/v1/chat/completions"})


@dataclass
class ForwardedRequest:
    method: str
    path: str
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    # The chained keys of the prompt's text blocks (prefixes.block_keys): what the prefix-aware router places by.
    prefix_keys: list[bytes] = field(default_factory=list)

    @classmethod
    def of(
        cls, method: str, path: str, query_string: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> ForwardedRequest:
        text = routing_text(path, body)
        return cls(method, path, query_string, headers, body, block_keys(text) if text else [])


def routing_text(path: str, body: bytes) -> str | None:
    """The text a generation request's prompt starts with, as far as the router needs it: a completion's prompt (the
    first, for a list), or a chat's messages in order, role and text. None for other requests and bodies that are
    not what the endpoint takes (the replica answers those with its 400)."""
    if path not in GENERATION_PATHS:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if path == "/v1/completions":
        prompt = data.get("prompt")
        if isinstance(prompt, list) and prompt:
            prompt = prompt[0]
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, list):  # token ids
            return ",".join(str(token) for token in prompt)
        return None
    messages = data.get("messages")
    if not isinstance(messages, list):
        return None
    return "".join(_message_text(message) for message in messages if isinstance(message, dict))


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts: their text, in order
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return f"<{message.get('role')}>{content if isinstance(content, str) else ''}\n"


async def run_through(app: ASGIApp, request: ForwardedRequest) -> AsyncIterator[Message]:
    """``request`` through ``app``; its response's ASGI messages (the start, then the body's parts) as they come.

    Closing the iterator early (the client left and Ray cancelled the call) tells the app the client disconnected
    and then cancels it, which aborts the request's generation as a departure from `ingot serve` does."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "root_path": "",
        "query_string": request.query_string,
        "headers": request.headers,
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
        "state": {},
    }
    messages: asyncio.Queue[Message | None] = asyncio.Queue()
    disconnected = asyncio.Event()
    body_delivered = False

    async def receive() -> Message:
        nonlocal body_delivered
        if not body_delivered:
            body_delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        messages.put_nowait(message)

    task = asyncio.create_task(app(scope, receive, send))
    task.add_done_callback(lambda _: messages.put_nowait(None))
    try:
        while (message := await messages.get()) is not None:
            yield message
        task.result()  # a bug past the app's own error handling surfaces here, not as a hung stream
    finally:
        disconnected.set()
        if not task.done():
            task.cancel()
