"""The inputs the TT conversion check (tt_conversion.py) runs a program on, built the way serving builds them.

A language-model step gets what the runtime's model runner gives a program: sequences partway through their
context, whose keys and values are already in a filled KV cache, each with its own blocks scattered over the cache
(never the padding block), a prefill chunk shorter than its bucket (padded tokens write to the padding block), and
a decode batch with a padding row, as a step with fewer sequences than its bucket has. A detector gets the
letterboxed sample scenes verification uses. Inputs come from a fixed seed, so a re-run checks the same thing.
"""

from __future__ import annotations

import numpy as np

from ingot.artifacts.manifest import Manifest, ProgramSpec
from ingot.compile.verify.sample_inputs import sample_batch
from ingot.runtime.block_manager import PAD_BLOCK
from ingot.sizes import ceil_div

SEED = 20261206


def program_inputs(program: ProgramSpec, manifest: Manifest) -> list[np.ndarray]:
    """The inputs of ``program`` in its input order (integers as int64, as the torch program takes them)."""
    if program.kind == "detect":
        return [sample_batch(manifest, count=program.batch[0]).numpy()]
    named = step_inputs(program, manifest.model.config["vocab_size"], manifest.buckets.max_context)
    return [named[spec.name] for spec in program.tt.inputs]


PAGED_CACHE_PREFIX = "kv_cache_"  # a paged-cache program's per-layer caches: kv_cache_0, kv_cache_1, ...


def paged_cache_inputs(names: list[str]) -> list[str]:
    """The per-layer caches among a program's inputs (none: the program has the one all-layer ``kv_cache``)."""
    return [name for name in names if name.startswith(PAGED_CACHE_PREFIX)]


def step_inputs(program: ProgramSpec, vocab_size: int, max_context: int) -> dict[str, np.ndarray]:
    """A prefill or decode step's inputs by name: every row but a padding row is a sequence already ``start``
    tokens into its context. With per-layer paged caches a prefill chunk starts a block (KVCacheLayout.paged)."""
    shapes = {spec.name: spec.shape for spec in program.tt.inputs}
    batch, width = shapes["input_ids"]
    table_width = shapes["block_tables"][1]
    caches = paged_cache_inputs(list(shapes)) or ["kv_cache"]
    if caches == ["kv_cache"]:
        num_blocks, block_size = shapes["kv_cache"][2], shapes["kv_cache"][3]
    else:
        num_blocks, block_size = shapes[caches[0]][0], shapes[caches[0]][2]
    block_aligned = caches != ["kv_cache"] and width > 1
    rng = np.random.default_rng(SEED)
    free_blocks = iter(rng.permutation(np.arange(PAD_BLOCK + 1, num_blocks)))
    tokens = {name: np.zeros((batch, width), np.int64) for name in ("input_ids", "position_ids", "slot_mapping")}
    block_tables = np.full((batch, table_width), PAD_BLOCK, np.int64)
    logits_index = np.zeros(batch, np.int64)
    sequences = batch - 1 if batch > 1 else 1  # the last row of a batch of several is a padding row
    for row in range(sequences):
        length = 1 if width == 1 else int(rng.integers(width // 2, width))  # a prefill chunk ends in padding
        if block_aligned:
            start = block_size * int(rng.integers(1, (max_context - length) // block_size + 1))
        else:
            start = int(rng.integers(1, max_context - length + 1))
        table = np.array([next(free_blocks) for _ in range(ceil_div(start + length, block_size))])
        positions = np.arange(start, start + length)
        block_tables[row, : len(table)] = table
        tokens["input_ids"][row, :length] = rng.integers(0, vocab_size, length)
        tokens["position_ids"][row, :length] = positions
        tokens["slot_mapping"][row, :length] = table[positions // block_size] * block_size + positions % block_size
        logits_index[row] = length - 1
    filled = {name: filled_cache(rng, shapes[name]) for name in caches}
    return {**tokens, "block_tables": block_tables, "logits_index": logits_index, **filled}


def filled_cache(rng: np.random.Generator, shape: list[int]) -> np.ndarray:
    """Keys and values of mean 0 and variance 1, uniform over [-sqrt(3), sqrt(3)): a full-size cache is ~3 GB for
    SmolLM2 on p150, which uniform numbers fill in a quarter of the time normal ones take."""
    half_width = np.float32(np.sqrt(3.0))
    cache = rng.random(shape, dtype=np.float32)
    cache *= 2 * half_width
    cache -= half_width
    return cache
