"""The engine requests behind one HTTP request (n choices per prompt), merged into one stream of outputs.

Requests are added with ``Engine.add_request`` rather than ``Engine.stream`` so that an invalid one raises before any
response starts (a streaming client gets a proper 400, not a broken stream), and so one queue serves every choice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from ingot.runtime.outputs import PromptLogprob, RequestOutput
from ingot.runtime.relay import LoopRelay, relay_for
from ingot.runtime.sampler import SampledToken
from ingot.runtime.sampling_params import SamplingParams
from ingot.server.access_log import AccessRecord
from ingot.server.errors import APIError
from ingot.server.metrics import ServerMetrics
from ingot.server.protocol import Usage
from ingot.server.served import ServedModel


@dataclass(frozen=True)
class Choice:
    prompt_token_ids: list[int]
    params: SamplingParams


class Generation:
    """Start with ``start()``; read ``outputs()``; always ``close()``, which aborts whatever has not finished.

    Closing is what turns a client's disconnect into an abort: the streaming response closes it when its task is
    cancelled, the non-streaming handler when it stops waiting.
    """

    def __init__(
        self,
        served: ServedModel,
        metrics: ServerMetrics,
        request_id: str,
        choices: list[Choice],
        prompt_tokens: int,
        record: AccessRecord,
    ) -> None:
        self.served = served
        self.metrics = metrics
        self.request_id = request_id
        self.choices = choices
        self.prompt_tokens = prompt_tokens  # each prompt once, however many choices it has (OpenAI's usage)
        self.completion_tokens = 0
        self.record = record
        record.request_id, record.model, record.prompt_tokens = request_id, served.name, prompt_tokens
        self._queue: asyncio.Queue[tuple[int, RequestOutput]] = asyncio.Queue()
        self._unfinished: set[int] = set()
        self._reserved = 0
        self._started = False  # every choice added: from then on an unfinished one is an abort
        self._start = time.monotonic()

    def engine_request_id(self, index: int) -> str:
        return f"{self.request_id}-{index}"

    def start(self) -> None:
        """Reserve queue slots (429 when full) and add every choice; an invalid one raises and undoes the rest."""
        self.served.reserve(len(self.choices))
        self._reserved = len(self.choices)
        relay = relay_for(asyncio.get_running_loop())
        try:
            for index, choice in enumerate(self.choices):
                self.served.engine.add_request(
                    choice.prompt_token_ids, choice.params, self._sink(relay, index), self.engine_request_id(index)
                )
                self._unfinished.add(index)
            self._started = True
        except BaseException:
            self.close()
            raise

    def _sink(self, relay: LoopRelay, index: int) -> Callable[[RequestOutput], None]:
        return lambda output: relay.put(self._queue, (index, output))  # on the engine thread

    async def outputs(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        """(choice index, delta) in arrival order, until every choice has finished."""
        while self._unfinished:
            index, output = await self._queue.get()
            if output.token_ids and self.record.time_to_first_token is None:
                self.record.time_to_first_token = time.monotonic() - self._start
            self.completion_tokens += len(output.token_ids)
            self.record.completion_tokens = self.completion_tokens
            if output.finished:
                self._unfinished.discard(index)
                self.metrics.observe_finished(self.served.name, output)
            yield index, output

    def usage(self) -> Usage:
        total = self.prompt_tokens + self.completion_tokens
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens, total_tokens=total)

    def close(self) -> None:
        """Abort the unfinished choices and give their queue slots back. Safe to call more than once."""
        for index in sorted(self._unfinished):
            self.served.engine.abort(self.engine_request_id(index))
            if self._started:  # a request refused while starting (a 400) was never served
                self.metrics.observe_aborted(self.served.name)
        self._unfinished.clear()
        self.served.release(self._reserved)
        self._reserved = 0


ENGINE_FAILED = "the engine failed while generating this response; the server log has the details"


def failure(output: RequestOutput) -> str | None:
    """Why the engine ended a choice without finishing it, for its client: an "error" (the engine says what failed,
    that request alone) or an "abort" the server did not ask for (the engine shut down); None for a real finish."""
    if output.finish_reason == "error":
        return output.error or ENGINE_FAILED
    if output.finish_reason == "abort":
        return ENGINE_FAILED
    return None


@dataclass
class ChoiceResult:
    """One finished choice, for a non-streaming response."""

    text: str = ""
    logprobs: list[SampledToken] = field(default_factory=list)
    prompt_logprobs: list[PromptLogprob | None] | None = None  # when the request scored its prompt
    finish_reason: str | None = None


async def collect(generation: Generation) -> list[ChoiceResult]:
    """Every choice's whole text. A choice the engine failed (or ended at shutdown) is a 500 naming what failed."""
    results = [ChoiceResult() for _ in generation.choices]
    async for index, output in generation.outputs():
        result = results[index]
        result.text += output.text
        result.logprobs.extend(output.logprobs)
        if output.prompt_logprobs is not None:
            result.prompt_logprobs = output.prompt_logprobs
        result.finish_reason = output.finish_reason
        message = failure(output)
        if message is not None:
            raise APIError(500, message, type="server_error")
    return results
