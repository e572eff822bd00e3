"""Mask computation per token of the two grammar engines, xgrammar and llguidance, with the demo model's tokenizer
and a nested JSON schema (the figures in docs/structured-outputs.md).

    pip install llguidance   # not a dependency of ingot; xgrammar is
    python bench/grammar_masks.py

A fixed valid document is forced through each engine's matcher token by token; each mask is timed.
"""

from __future__ import annotations

import json
import time

from transformers import AutoTokenizer

from ingot.models.source import resolve_source

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "properties": {
                "street": {"type": "string"},
                "city": {"type": "string"},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["street", "city", "zip"],
            "additionalProperties": False,
        },
        "scores": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"subject": {"type": "string"}, "score": {"type": "number"}},
                "required": ["subject", "score"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["name", "age", "role", "tags", "address", "scores"],
    "additionalProperties": False,
}
DOCUMENT = {
    "name": "Ada Lovelace",
    "age": 36,
    "role": "admin",
    "tags": ["math", "poetry", "engines"],
    "address": {"street": "12 St James's Square", "city": "London", "zip": "12345"},
    "scores": [{"subject": "analysis", "score": 9.5}, {"subject": "logic", "score": 10}],
}


def report(name: str, times: list[float]) -> None:
    times = sorted(times)
    mean = sum(times) / len(times)
    print(f"{name}: mask per token mean {mean * 1e6:.0f} us, median {times[len(times) // 2] * 1e6:.0f} us, "
          f"worst {times[-1] * 1e6:.0f} us")  # fmt: skip


def xgrammar_masks(tokenizer, vocab: int, ids: list[int]) -> list[float]:
    import xgrammar

    start = time.perf_counter()
    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab))
    print(f"xgrammar: tokenizer {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    compiled = compiler.compile_json_schema(json.dumps(SCHEMA))
    print(f"xgrammar: compile {(time.perf_counter() - start) * 1e3:.1f} ms")
    matcher, bitmask, times = xgrammar.GrammarMatcher(compiled), xgrammar.allocate_token_bitmask(1, vocab), []
    for token in [*ids, None]:
        start = time.perf_counter()
        matcher.fill_next_token_bitmask(bitmask)
        times.append(time.perf_counter() - start)
        assert token is None or matcher.accept_token(token)
    return times


def llguidance_masks(tokenizer, vocab: int, ids: list[int]) -> list[float]:
    import llguidance
    import llguidance.hf
    import llguidance.torch

    start = time.perf_counter()
    engine_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)
    print(f"llguidance: tokenizer {time.perf_counter() - start:.2f} s")
    grammar = llguidance.LLMatcher.grammar_from_json_schema(SCHEMA)
    matcher = llguidance.LLMatcher(engine_tokenizer, grammar)
    bitmask, times = llguidance.torch.allocate_token_bitmask(1, vocab), []
    for token in [*ids, None]:
        start = time.perf_counter()
        llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0)
        times.append(time.perf_counter() - start)
        assert token is None or matcher.consume_token(token), matcher.get_error()
    return times


def main() -> None:
    source = resolve_source("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(source.directory, gguf_file=source.gguf_file)
    ids = tokenizer.encode(json.dumps(DOCUMENT, separators=(",", ":")), add_special_tokens=False)
    print(f"vocabulary {len(tokenizer)}, document {len(ids)} tokens")
    for name, run in (("xgrammar", xgrammar_masks), ("llguidance", llguidance_masks)):
        for _ in range(3):
            try:
                report(name, run(tokenizer, len(tokenizer), ids))
            except ImportError:
                print(f"{name} is not installed")
                break


if __name__ == "__main__":
    main()
