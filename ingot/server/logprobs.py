"""The engine's per-token log-probabilities in OpenAI's two shapes, legacy completions' and chat's, and prompt
logprobs in an echoed completion's shape and in vLLM's ``prompt_logprobs``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ingot.runtime.outputs import PromptLogprob
from ingot.runtime.sampler import SampledToken
from ingot.server.protocol import ChatLogprobs, CompletionLogprobs, PromptTokenLogprob, TokenLogprob, TopLogprob


class TokenText:
    """A token's text as logprobs show it: decoded alone, so a piece of a multi-byte character is U+FFFD (as vLLM)."""

    def __init__(self, tokenizer) -> None:
        self._decode = tokenizer.backend_tokenizer.decode
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self._cache[token_id] = self._decode([token_id], skip_special_tokens=False)
        return text


@dataclass(frozen=True)
class _Unscored:
    """A prompt's first token: nothing before it predicts it, so it has no logprob (OpenAI's and vLLM's null)."""

    token_id: int
    logprob: None = None
    top_logprobs: list[tuple[int, float]] = field(default_factory=list)


def completion_logprobs(
    token_text: TokenText, tokens: Sequence[SampledToken | PromptLogprob | _Unscored], text_offset: int
) -> CompletionLogprobs:
    """``text_offset`` is where the first of ``tokens`` starts in the choice's text (streams continue from there).
    Each top_logprobs entry holds the requested alternatives plus the token itself, as OpenAI and vLLM return; an
    unscored token (an echoed prompt's first) has null for both."""
    texts = [token_text(t.token_id) for t in tokens]
    offsets = []
    for text in texts:
        offsets.append(text_offset)
        text_offset += len(text)
    return CompletionLogprobs(
        tokens=texts,
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[
            None if t.logprob is None else {**{token_text(i): lp for i, lp in t.top_logprobs}, text: t.logprob}
            for t, text in zip(tokens, texts)
        ],
        text_offset=offsets,
    )


def echoed_prompt(
    prompt_token_ids: list[int], prompt_logprobs: list[PromptLogprob | None], top: int
) -> list[PromptLogprob | _Unscored]:
    """An echoed prompt's tokens for ``completion_logprobs``: the first unscored, the rest with ``top``
    alternatives (the engine may have computed more, for vLLM's ``prompt_logprobs``)."""
    scored = [
        PromptLogprob(p.token_id, p.logprob, p.rank, p.top_logprobs[:top]) for p in prompt_logprobs[1:] if p is not None
    ]
    return [_Unscored(prompt_token_ids[0]), *scored]


def vllm_prompt_logprobs(
    token_text: TokenText, prompt_logprobs: list[PromptLogprob | None]
) -> list[dict[str, PromptTokenLogprob] | None]:
    """vLLM's shape: per prompt token, None for the first, else token id -> logprob, rank and text, for the prompt
    token and each alternative (ranked 1, 2, ...)."""
    shaped: list[dict[str, PromptTokenLogprob] | None] = []
    for entry in prompt_logprobs:
        if entry is None:
            shaped.append(None)
            continue
        alternatives = {
            str(token): PromptTokenLogprob(logprob=logprob, rank=rank, decoded_token=token_text(token))
            for rank, (token, logprob) in enumerate(entry.top_logprobs, start=1)
        }
        own = PromptTokenLogprob(logprob=entry.logprob, rank=entry.rank, decoded_token=token_text(entry.token_id))
        shaped.append({str(entry.token_id): own, **alternatives})
    return shaped


def chat_logprobs(token_text: TokenText, tokens: list[SampledToken]) -> ChatLogprobs:
    return ChatLogprobs(
        content=[
            TokenLogprob(
                **_top(token_text, t.token_id, t.logprob).model_dump(),
                top_logprobs=[_top(token_text, i, lp) for i, lp in t.top_logprobs],
            )
            for t in tokens
        ]
    )


def _top(token_text: TokenText, token_id: int, logprob: float) -> TopLogprob:
    text = token_text(token_id)
    return TopLogprob(token=text, logprob=logprob, bytes=list(text.encode("utf-8")))
