"""What the engine hands back for a request: streamed deltas, and timings when it finishes."""

from __future__ import annotations

from dataclasses import dataclass, field

from ingot.runtime.sampler import SampledToken


@dataclass(frozen=True)
class PromptLogprob:
    """A prompt token's log-probability given the tokens before it (of the raw logits, as the sampler's logprobs)."""

    token_id: int
    logprob: float
    rank: int  # 1 + how many tokens the model found more likely (vLLM's rank)
    top_logprobs: list[tuple[int, float]]  # the requested alternatives, highest first


@dataclass(frozen=True)
class RequestMetrics:
    """Seconds, measured on the engine's clock; what vLLM's latency histograms observe."""

    queue_time: float
    time_to_first_token: float
    e2e_latency: float
    inter_token_latencies: list[float]


@dataclass
class RequestOutput:
    """One step's news for a request: the new text and tokens since its previous output."""

    request_id: str
    text: str
    token_ids: list[int]
    finished: bool = False
    finish_reason: str | None = None  # "stop", "length", "abort" or "error"
    prompt_tokens: int = 0  # set on the final output
    logprobs: list[SampledToken] = field(default_factory=list)
    prompt_logprobs: list[PromptLogprob | None] | None = None  # on the first output, when the request asked
    metrics: RequestMetrics | None = None
    error: str | None = None  # on an "error" finish: what failed, in words fit for the client (the log has the rest)


@dataclass
class Completion:
    """A finished request, as ``Engine.generate`` returns it."""

    request_id: str
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    logprobs: list[SampledToken] = field(default_factory=list)
    prompt_logprobs: list[PromptLogprob | None] | None = None  # when the request asked: the first token's is None
    error: str | None = None  # on an "error" finish: what failed
