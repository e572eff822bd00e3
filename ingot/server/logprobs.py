"""The engine's per-token log-probabilities in OpenAI's two shapes: legacy completions' and chat's."""

from __future__ import annotations

from ingot.runtime.sampler import SampledToken
from ingot.server.protocol import ChatLogprobs, CompletionLogprobs, TokenLogprob, TopLogprob


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


def completion_logprobs(token_text: TokenText, tokens: list[SampledToken], text_offset: int) -> CompletionLogprobs:
    """``text_offset`` is where the first of ``tokens`` starts in the choice's text (streams continue from there).
    Each top_logprobs entry holds the requested alternatives plus the sampled token, as OpenAI and vLLM return."""
    texts = [token_text(t.token_id) for t in tokens]
    offsets = []
    for text in texts:
        offsets.append(text_offset)
        text_offset += len(text)
    return CompletionLogprobs(
        tokens=texts,
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[
            {**{token_text(i): lp for i, lp in t.top_logprobs}, text: t.logprob} for t, text in zip(tokens, texts)
        ],
        text_offset=offsets,
    )


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
