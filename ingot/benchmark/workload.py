"""Benchmark prompts: random tokens of an exact length, or slices of a fixed English text."""

from __future__ import annotations

import random
from pathlib import Path

FIXED_TEXT = (Path(__file__).parent.parent / "compile" / "verify" / "verify_text.txt").read_text()


def random_token_prompts(tokenizer, count: int, input_len: int, seed: int = 0) -> list[list[int]]:
    """Token ids drawn from the vocabulary's ordinary tokens (no special tokens), as vLLM's random dataset does."""
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    ordinary = [i for i in range(len(tokenizer)) if i not in special]
    return [[rng.choice(ordinary) for _ in range(input_len)] for _ in range(count)]


def fixed_text_prompts(tokenizer, count: int, input_len: int) -> list[list[int]]:
    """Windows of the fixed text, each ``input_len`` tokens, starting at different places."""
    ids = tokenizer(FIXED_TEXT, add_special_tokens=False).input_ids
    while len(ids) < input_len * 2:
        ids = ids + ids
    stride = max(1, (len(ids) - input_len) // max(count, 1))
    return [ids[(i * stride) % (len(ids) - input_len) :][:input_len] for i in range(count)]
