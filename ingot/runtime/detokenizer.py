"""Streams generated text: token ids to text deltas that never split a character, cut at stop strings."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# Prompt tokens decoded as context for the first output tokens: enough for a SentencePiece leading space and for
# the rest of a character whose first bytes ended the prompt.
PROMPT_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    """Turns a stream of token ids into text deltas, never splitting a UTF-8 character.

    vLLM's sliding window: a delta is ``decode(ids[prefix:])`` minus ``decode(ids[prefix:read])``, so each token is
    decoded next to its predecessors (a SentencePiece word keeps its leading space) and a window whose text ends in
    U+FFFD waits for the bytes that complete the character. tokenizers' ``DecodeStream`` does the same, but when the
    prompt ends mid-character it emits the whole prompt as output, so it is not used.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerFast, prompt_token_ids: list[int], skip_special_tokens: bool = True
    ) -> None:
        # The Rust tokenizer directly: transformers' decode adds only clean_up_tokenization_spaces, which is lossy.
        self._decode = partial(tokenizer.backend_tokenizer.decode, skip_special_tokens=skip_special_tokens)
        self._ids = list(prompt_token_ids[-PROMPT_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def add(self, token_id: int) -> str:
        """Take the next generated token; return the text it completes (often "", e.g. mid-character)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) <= len(prefix) or full.endswith("\ufffd"):
            return ""
        delta = full[len(prefix) :]
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return delta


class StopStringMatcher:
    """Finds stop strings in streamed text, even when split across tokens, and holds back text that might
    be the start of one so a client never sees part of a stop string."""

    def __init__(self, stop: list[str]) -> None:
        self._stop = [s for s in stop if s]  # an empty stop string would end every generation before it starts
        self._held = ""

    def feed(self, delta: str, may_stop: bool = True) -> tuple[str, bool]:
        """Return (text safe to emit now, stopped?); on a stop, only the text before it, and the stop is dropped.
        While not ``may_stop`` a stop string passes as text (min_tokens not reached yet)."""
        text = self._held + delta
        if not may_stop:
            self._held = ""
            return text, False
        hits = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        if hits:
            self._held = ""
            return text[: min(hits)], True
        safe = len(text) - self._partial_stop_length(text)
        self._held = text[safe:]
        return text[:safe], False

    def flush(self) -> str:
        """At the end of generation (no stop hit): return the text held back as a possible stop start."""
        held, self._held = self._held, ""
        return held

    def _partial_stop_length(self, text: str) -> int:
        """Length of the longest end of ``text`` that a stop string starts with: it may yet become that stop."""
        for n in range(min(len(text), max((len(s) for s in self._stop), default=0)), 0, -1):
            if any(s.startswith(text[-n:]) for s in self._stop):
                return n
        return 0
