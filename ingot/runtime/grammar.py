"""Structured outputs: grammars compiled against an artifact's tokenizer, a matcher per constrained request, and the
token masks they put on the batch's logits.

xgrammar does the grammar work (see docs/structured-outputs.md for why xgrammar and what it costs per token).
Compiling is CPU work of milliseconds, so the server compiles on a request's worker thread; the compiler caches
what it compiled by the grammar's text, so a repeated schema costs a lookup. Each constrained request owns one
``GrammarState`` for its lifetime, advanced on the engine thread by every token it accepts and dropped with the
request when it finishes, fails or is aborted.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import xgrammar

from ingot.errors import RequestError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

GrammarKind = Literal["json_schema", "json_object", "regex", "choice", "grammar"]


_LOG_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")


class GrammarError(RequestError):
    """A grammar, schema, regex or choice list that cannot be compiled; ``param`` names the request field."""


@dataclass(frozen=True)
class GrammarSpec:
    """What a request constrains its output to. ``text`` is the schema (JSON), the regex, the EBNF grammar or the
    choices (a JSON list of strings); ``json_object`` has none."""

    kind: GrammarKind
    text: str = ""
    param: str = "response_format"  # the request field it came from, for a 400


class CompiledGrammar:
    """A grammar compiled for one tokenizer; shared by every request that asks for the same grammar."""

    def __init__(self, compiled: xgrammar.CompiledGrammar, spec: GrammarSpec) -> None:
        self._compiled = compiled
        self.spec = spec

    def new_state(self) -> GrammarState:
        return GrammarState(xgrammar.GrammarMatcher(self._compiled))


class GrammarState:
    """One request's position in its grammar. Touched by the engine thread only."""

    def __init__(self, matcher: xgrammar.GrammarMatcher) -> None:
        self._matcher = matcher

    def accept(self, token_id: int) -> bool:
        """Advance by a sampled token; False if the grammar does not allow it (then the state is unchanged)."""
        return self._matcher.accept_token(token_id)

    @property
    def finished(self) -> bool:
        """The grammar has accepted a stop token: nothing more may follow."""
        return self._matcher.is_terminated()


class GrammarCompiler:
    """Compiles request grammars for one artifact's tokenizer. Thread-safe; results are cached by grammar text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int, stop_token_ids: list[int]) -> None:
        """``vocab_size`` is the model's (the logits' width), which may exceed the tokenizer's: the ids past the
        tokenizer's are never allowed. ``stop_token_ids`` are the tokens allowed once the grammar is complete."""
        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids)
        self.vocab_size = vocab_size
        self._compiler = xgrammar.GrammarCompiler(info, max_threads=1)

    def compile(self, spec: GrammarSpec) -> CompiledGrammar:
        """The compiled grammar, or a ``GrammarError`` naming what is wrong with it."""
        try:
            return CompiledGrammar(self._compile(spec), spec)
        except (RuntimeError, ValueError, TypeError) as error:  # xgrammar's errors for bad input
            raise GrammarError(f"{_describe(spec)} cannot be used: {_first_line(error)}", spec.param) from None

    def _compile(self, spec: GrammarSpec) -> xgrammar.CompiledGrammar:
        if spec.kind == "json_object":  # OpenAI's: any JSON object (not an array or a scalar)
            return self._compiler.compile_json_schema('{"type": "object"}', any_whitespace=False, strict_mode=False)
        if spec.kind == "json_schema":
            # strict: no property or item the schema does not name (vLLM's default, and OpenAI's strict outputs)
            return self._compiler.compile_json_schema(spec.text, any_whitespace=False, strict_mode=True)
        if spec.kind == "regex":
            return self._compiler.compile_regex(spec.text)
        if spec.kind == "choice":
            choices = json.loads(spec.text)
            literals = (json.dumps(choice, ensure_ascii=False) for choice in choices)  # \u escapes stop at the BMP
            return self._compiler.compile_grammar("root ::= " + " | ".join(literals))
        return self._compiler.compile_grammar(spec.text)


def _describe(spec: GrammarSpec) -> str:
    return {
        "json_schema": "the JSON schema",
        "json_object": "the JSON grammar",
        "regex": "the regex",
        "choice": "the choices",
        "grammar": "the grammar",
    }[spec.kind]


def _first_line(error: Exception) -> str:
    """The engine's reason, without the time and C++ source location it puts first ("[07:35:06] file.cc:12: ")."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return _LOG_PREFIX.sub("", lines[0]) if lines else type(error).__name__


@functools.cache
def _batch_matcher() -> xgrammar.BatchGrammarMatcher:
    """Fills many requests' masks in one call on a thread per core: the model's step is over, its cores are free."""
    return xgrammar.BatchGrammarMatcher(max_threads=torch.get_num_threads())


def mask_logits(logits: torch.Tensor, rows: list[int], states: list[GrammarState]) -> torch.Tensor:
    """``logits`` [batch, vocab] with every token a state forbids at -inf in its row (``rows[i]`` is
    ``states[i]``'s); a new tensor, the input untouched. At a grammar's end only the stop tokens are allowed. One
    call fills every row's bitmask and one applies them all: no Python loop over rows or tokens."""
    batch, vocab = logits.shape
    bitmask = torch.empty((batch, (vocab + 31) // 32), dtype=torch.int32)
    _batch_matcher().batch_fill_next_token_bitmask([state._matcher for state in states], bitmask, rows)
    masked = logits.clone()
    xgrammar.apply_token_bitmask_inplace(masked, bitmask, vocab_size=vocab, indices=rows)
    return masked
