"""A request's sampling parameters, with vLLM's defaults and OpenAI's ranges, checked once when the request arrives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ingot.errors import SamplingParamsError

if TYPE_CHECKING:
    from ingot.runtime.grammar import CompiledGrammar

MAX_LOGPROBS = 20
# The sampler computes in float32: a value beyond these has no float32 image (1e308 is finite in JSON and in Python,
# infinite in float32), and a divisor below the smallest normal float32 is 0 or loses its precision.
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_MIN_NORMAL = 1.1754943508222875e-38


def _check(param: str, ok: bool, value: object, allowed: str) -> None:
    if not ok:
        raise SamplingParamsError(param, f"{param} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    max_tokens: int = 16
    min_tokens: int = 0
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: disabled
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # how many top alternatives to return per token
    prompt_logprobs: int | None = None  # each prompt token's logprob, with this many top alternatives
    skip_special_tokens: bool = True
    grammar: CompiledGrammar | None = None  # structured outputs: the output follows it (compiled by the caller)

    def __post_init__(self) -> None:
        """Reject out-of-range values. Written as `low <= x <= high` so that NaN fails too.

        vLLM's ranges (OpenAI's where they overlap), bounded where vLLM leaves a side open (temperature above,
        repetition_penalty both sides) by float32's finite normal range: the values the sampler can compute with.
        """
        _check("n", self.n >= 1, self.n, ">= 1")
        # 0 with prompt_logprobs: the prompt is scored and nothing generated (what evaluation harnesses ask)
        scoring = self.prompt_logprobs is not None
        _check("max_tokens", self.max_tokens >= (0 if scoring else 1), self.max_tokens, ">= 0" if scoring else ">= 1")
        min_tokens_ok = 0 <= self.min_tokens <= self.max_tokens
        _check("min_tokens", min_tokens_ok, self.min_tokens, f"in [0, max_tokens={self.max_tokens}]")
        _check("temperature", 0 <= self.temperature <= FLOAT32_MAX, self.temperature, f"in [0, {FLOAT32_MAX:.4g}]")
        _check("top_p", 0 < self.top_p <= 1, self.top_p, "in (0, 1]")
        _check("top_k", self.top_k >= -1, self.top_k, "-1 (disabled), 0 (disabled) or a positive count")
        _check("min_p", 0 <= self.min_p <= 1, self.min_p, "in [0, 1]")
        penalty_ok = FLOAT32_MIN_NORMAL <= self.repetition_penalty <= FLOAT32_MAX
        _check("repetition_penalty", penalty_ok, self.repetition_penalty, f"in [{FLOAT32_MIN_NORMAL:.4g}, {FLOAT32_MAX:.4g}]")
        _check("presence_penalty", -2 <= self.presence_penalty <= 2, self.presence_penalty, "in [-2, 2]")
        _check("frequency_penalty", -2 <= self.frequency_penalty <= 2, self.frequency_penalty, "in [-2, 2]")
        if self.logprobs is not None:
            _check("logprobs", 0 <= self.logprobs <= MAX_LOGPROBS, self.logprobs, f"in [0, {MAX_LOGPROBS}]")
        if scoring:
            ok = 0 <= self.prompt_logprobs <= MAX_LOGPROBS
            _check("prompt_logprobs", ok, self.prompt_logprobs, f"in [0, {MAX_LOGPROBS}]")
        for token, bias in self.logit_bias.items():
            _check("logit_bias", -100 <= bias <= 100, bias, f"in [-100, 100] (token {token})")
        if self.seed is not None:  # torch.Generator.manual_seed accepts exactly this range
            _check("seed", -(2**63) <= self.seed < 2**64, self.seed, "in [-2**63, 2**64)")

    def validate_vocab(self, vocab_size: int) -> None:
        """Reject token ids the model cannot produce; needs the artifact, so it runs after construction."""
        for param, ids in (("logit_bias", self.logit_bias), ("stop_token_ids", self.stop_token_ids)):
            for token in ids:
                _check(param, 0 <= token < vocab_size, token, f"a token id in [0, {vocab_size})")

    @property
    def greedy(self) -> bool:
        """Temperatures this close to 0 are greedy, as in vLLM: dividing by them would overflow the logits."""
        return self.temperature < 1e-5
