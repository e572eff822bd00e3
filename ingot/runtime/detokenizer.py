"""Streams generated text: token ids to text deltas that never split a character, cut at stop strings."""

from __future__ import annotations

from collections import deque
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
    be the start of one so a client never sees part of a stop string.

    One automaton over every stop string (Aho-Corasick) reads each character once: a token costs the same
    whatever the number of stop strings, and the text held back is never longer than the longest of them. The
    first stop string completed wins (the longest of those completed by the same character), so where the text
    is cut does not depend on how it was split into tokens.
    """

    def __init__(self, stop: list[str]) -> None:
        self._automaton = _StopAutomaton([s for s in stop if s])  # an empty stop string would end every output
        self._state = 0
        self._held = ""

    def feed(self, delta: str, may_stop: bool = True) -> tuple[str, bool]:
        """Return (text safe to emit now, stopped?); on a stop, only the text before it, and the stop is dropped.
        While not ``may_stop`` a stop string passes as text (min_tokens not reached yet)."""
        text = self._held + delta
        if not may_stop:
            self._held, self._state = "", 0
            return text, False
        automaton, state = self._automaton, self._state
        for index, char in enumerate(delta, start=len(self._held) + 1):
            state = automaton.next_state(state, char)
            matched = automaton.match_length[state]
            if matched:
                self._held, self._state = "", 0
                return text[: index - matched], True
        self._state = state
        safe = len(text) - automaton.depth[state]  # the held end is the start of a stop string
        self._held = text[safe:]
        return text[:safe], False

    def flush(self) -> str:
        """At the end of generation (no stop hit): return the text held back as a possible stop start."""
        held, self._held, self._state = self._held, "", 0
        return held


class _StopAutomaton:
    """A trie of the stop strings with failure links: state ``s`` stands for the longest end of the text read
    so far that some stop string starts with (``depth[s]`` characters long)."""

    def __init__(self, stop: list[str]) -> None:
        self.children: list[dict[str, int]] = [{}]
        self.depth = [0]
        self.match_length = [0]  # the longest stop string that ends the state's text, or 0
        for string in stop:
            state = 0
            for char in string:
                child = self.children[state].get(char)
                if child is None:
                    child = self.children[state][char] = len(self.children)
                    self.children.append({})
                    self.depth.append(self.depth[state] + 1)
                    self.match_length.append(0)
                state = child
            self.match_length[state] = len(string)
        self.fail = [0] * len(self.children)
        queue = deque(self.children[0].values())  # breadth first: a state's failure is shallower than it
        while queue:
            state = queue.popleft()
            if not self.match_length[state]:
                self.match_length[state] = self.match_length[self.fail[state]]
            for char, child in self.children[state].items():
                self.fail[child] = self.next_state(self.fail[state], char)
                queue.append(child)

    def next_state(self, state: int, char: str) -> int:
        while state and char not in self.children[state]:
            state = self.fail[state]
        return self.children[state].get(char, 0)
