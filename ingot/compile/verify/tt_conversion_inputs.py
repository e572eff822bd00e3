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


def step_inputs(program: ProgramSpec, vocab_size: int, max_context: int) -> dict[str, np.ndarray]:
    """A prefill or decode step's inputs by name: every row but a padding row is a sequence already ``start``
    tokens into its context."""
    shapes = {spec.name: spec.shape for spec in program.tt.inputs}
    batch, width = shapes["input_ids"]
    table_width = shapes["block_tables"][1]
    num_blocks, block_size = shapes["kv_cache"][2], shapes["kv_cache"][3]
    rng = np.random.default_rng(SEED)
    free_blocks = iter(rng.permutation(np.arange(PAD_BLOCK + 1, num_blocks)))
    tokens = {name: np.zeros((batch, width), np.int64) for name in ("input_ids", "position_ids", "slot_mapping")}
    block_tables = np.full((batch, table_width), PAD_BLOCK, np.int64)
    logits_index = np.zeros(batch, np.int64)
    sequences = batch - 1 if batch > 1 else 1  # the last row of a batch of several is a padding row
    for row in range(sequences):
        length = 1 if width == 1 else int(rng.integers(width // 2, width))  # a prefill chunk ends in padding
        start = int(rng.integers(1, max_context - length + 1))
        table = np.array([next(free_blocks) for _ in range(ceil_div(start + length, block_size))])
        positions = np.arange(start, start + length)
        block_tables[row, : len(table)] = table
        tokens["input_ids"][row, :length] = rng.integers(0, vocab_size, length)
        tokens["position_ids"][row, :length] = positions
        tokens["slot_mapping"][row, :length] = table[positions // block_size] * block_size + positions % block_size
        logits_index[row] = length - 1
    kv_cache = rng.standard_normal(shapes["kv_cache"], dtype=np.float32)
    return {**tokens, "block_tables": block_tables, "logits_index": logits_index, "kv_cache": kv_cache}
