"""Request fields to the engine's ``SamplingParams``, one per choice."""

from __future__ import annotations

from ingot.runtime.grammar import CompiledGrammar
from ingot.runtime.sampling_params import SamplingParams
from ingot.server.errors import bad_request
from ingot.server.generation import Choice
from ingot.server.protocol import SamplingFields

# Without max_tokens a request may use the rest of the context (vLLM's behaviour), up to this many tokens, so that a
# client that forgot it does not hold a slot for minutes on a long-context model.
DEFAULT_MAX_TOKENS_CAP = 1024

# Fields passed to SamplingParams as they are when given; None leaves SamplingParams' default.
_PASSED_THROUGH = (
    "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "stop_token_ids", "min_tokens", "ignore_eos", "skip_special_tokens",
)  # fmt: skip


def check_n(n: int, max_queue: int, prompts: int = 1) -> None:
    """n choices of each prompt are n x prompts engine requests; more than the queue holds could never be admitted
    (a 429 would ask the client to retry forever)."""
    if not 1 <= n <= max_queue:
        raise bad_request(f"n must be in [1, {max_queue}], got {n}", "n")
    if n * prompts > max_queue:
        message = f"{prompts} prompts x n={n} make {n * prompts} requests; this server queues at most {max_queue}"
        raise bad_request(message, "prompt")


def make_choices(
    body: SamplingFields,
    prompts: list[list[int]],
    *,
    max_tokens: int | None,
    logprobs: int | None,
    max_context: int,
    grammar: CompiledGrammar | None = None,
    prompt_logprobs: int | None = None,
) -> list[Choice]:
    """n choices per prompt, prompt-major (OpenAI's choice order). With a seed, choice i draws from seed + i, so the
    choices of one request differ while the request as a whole stays reproducible."""
    given = {name: getattr(body, name) for name in _PASSED_THROUGH if getattr(body, name) is not None}
    logit_bias = _logit_bias(body.logit_bias)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if grammar is not None and body.ignore_eos:  # the grammar ends an output with EOS, which ignore_eos would not end
        raise bad_request("ignore_eos cannot be combined with structured outputs or tool calls", "ignore_eos")
    choices = []
    for prompt in prompts:
        limit = max_tokens if max_tokens is not None else max(1, min(max_context - len(prompt), DEFAULT_MAX_TOKENS_CAP))
        for i in range(body.n):
            seed = None if body.seed is None else body.seed + i
            params = SamplingParams(
                max_tokens=limit, logprobs=logprobs, seed=seed, logit_bias=logit_bias, stop=stop, grammar=grammar,
                prompt_logprobs=prompt_logprobs, **given,
            )
            choices.append(Choice(prompt, params))
    return choices


def _logit_bias(bias: dict[str, float] | None) -> dict[int, float]:
    """JSON object keys are strings; OpenAI's name token ids."""
    try:
        return {int(token): value for token, value in (bias or {}).items()}
    except ValueError:
        raise bad_request("logit_bias keys must be token ids (integers)", "logit_bias") from None
