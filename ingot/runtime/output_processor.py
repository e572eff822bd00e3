"""Sampled tokens to what a request's caller receives: text deltas, stop checks, finish reasons, per-request timings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ingot.runtime.detokenizer import IncrementalDetokenizer, StopStringMatcher
from ingot.runtime.outputs import RequestMetrics, RequestOutput
from ingot.runtime.sampler import SampledToken
from ingot.runtime.sequence import Sequence

Sink = Callable[[RequestOutput], None]


@dataclass(eq=False)
class RequestState:
    """A request's output side: where its outputs go, and its text so far."""

    seq: Sequence
    sink: Sink
    detokenizer: IncrementalDetokenizer
    stop: StopStringMatcher
    eos_token_ids: frozenset[int]
    token_times: list[float] = field(default_factory=list)


class OutputProcessor:
    def __init__(self, max_context: int) -> None:
        self.max_context = max_context
        self.requests: dict[str, RequestState] = {}  # the requests not finished yet

    def add(self, request: RequestState) -> None:
        self.requests[request.seq.request_id] = request

    def process(self, request: RequestState, token: SampledToken | None) -> RequestOutput:
        """The output for a request's newest token (already appended to its sequence); its ``finish_reason`` is
        set when the token ends the request, which ``finish`` then completes. No token: the request asked for
        none (its prompt scored), and its prompt has run. The first output carries the prompt logprobs."""
        seq = request.seq
        now = time.monotonic()
        first = seq.first_token_time is None
        if first:
            seq.first_token_time = now
        else:
            request.token_times.append(now - seq.last_token_time)
        seq.last_token_time = now
        output = self._output(request, token)
        if first:
            output.prompt_logprobs = seq.prompt_logprobs
        return output

    def _output(self, request: RequestState, token: SampledToken | None) -> RequestOutput:
        seq = request.seq
        if token is None:
            return RequestOutput(seq.request_id, "", [], finish_reason="length")

        params = seq.params
        completed = len(seq.output_token_ids)
        logprobs = [token] if params.logprobs is not None else []
        if token.token_id in request.eos_token_ids or token.token_id in params.stop_token_ids:
            return RequestOutput(seq.request_id, request.stop.flush(), [token.token_id], finish_reason="stop", logprobs=logprobs)
        # before min_tokens, a stop string is text like any other (vLLM's rule; EOS and stop ids are banned then)
        text, stopped = request.stop.feed(request.detokenizer.add(token.token_id), completed >= params.min_tokens)
        output = RequestOutput(seq.request_id, text, [token.token_id], logprobs=logprobs)
        if stopped:
            output.finish_reason = "stop"
        elif completed >= params.max_tokens or seq.num_tokens >= self.max_context:
            output.text += request.stop.flush()
            output.finish_reason = "length"
        return output

    def finish(self, request: RequestState, output: RequestOutput, reason: str, error: str | None = None) -> None:
        """Make ``output`` the request's last (with its timings) and forget the request."""
        seq = request.seq
        self.requests.pop(seq.request_id, None)
        now = time.monotonic()
        output.finished = True
        output.finish_reason = reason
        output.error = error
        output.prompt_tokens = len(seq.prompt_token_ids)
        output.metrics = RequestMetrics(
            queue_time=(seq.scheduled_time or now) - seq.arrival_time,
            time_to_first_token=(seq.first_token_time or now) - seq.arrival_time,
            e2e_latency=now - seq.arrival_time,
            inter_token_latencies=request.token_times,
        )
