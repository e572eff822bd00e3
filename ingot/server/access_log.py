"""One log line per request, written when its response has been sent (for a stream: after the last chunk)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("ingot.access")

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its response was ready


@dataclass
class AccessRecord:
    """What a handler knows about its request; filled in as it goes, logged by the middleware."""

    request_id: str = "-"
    model: str = "-"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    time_to_first_token: float | None = None
    prompt: str | None = None  # only kept with --log-prompts


def access_record(request: Request) -> AccessRecord:
    return request.state.access


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, log_prompts: bool = False) -> None:
        self.app = app
        self.log_prompts = log_prompts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = AccessRecord()
        scope.setdefault("state", {})["access"] = record
        start = time.monotonic()
        # With no response started: an exception that escaped every handler is a 500; a handler that returned
        # without answering did so because the client left mid-body.
        status: int | None = None

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        except BaseException:
            status = status or 500
            raise
        finally:
            self._log(scope, record, status or CLIENT_CLOSED_REQUEST, time.monotonic() - start)

    def _log(self, scope: Scope, record: AccessRecord, status: int, total: float) -> None:
        ttft = "-" if record.time_to_first_token is None else f"{record.time_to_first_token:.3f}s"
        line = (
            f'{record.request_id} "{scope["method"]} {scope["path"]}" {status} model={record.model} '
            f"prompt_tokens={record.prompt_tokens} completion_tokens={record.completion_tokens} "
            f"ttft={ttft} total={total:.3f}s"
        )
        if self.log_prompts and record.prompt is not None:
            line += f" prompt={record.prompt!r}"
        log.info(line)
