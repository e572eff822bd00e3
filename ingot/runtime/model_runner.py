"""Runs one model step: pads it to a size a program takes, maps positions to cache slots, calls the program."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ingot.artifacts.manifest import Manifest
from ingot.errors import ProgramShapeError
from ingot.runtime.block_manager import PAD_BLOCK
from ingot.runtime.programs import load_programs, padded_size, program_for, step_sizes


class ModelRunner:
    def __init__(self, directory: Path, manifest: Manifest, num_blocks: int) -> None:
        if num_blocks < 2:
            raise ValueError("the KV cache needs at least 2 blocks (one is the padding block)")
        self.manifest = manifest
        self.programs = load_programs(directory, manifest)
        layout = manifest.kv_cache
        self.block_size = layout.block_size
        self.num_blocks = num_blocks
        self.vocab_size = manifest.programs[0].outputs[0].shape[-1]
        self.prefill_sizes = step_sizes(manifest.programs, "prefill", lambda spec: spec.tokens)
        self.decode_sizes = step_sizes(manifest.programs, "decode", lambda spec: spec.batch)
        self.kv_cache = torch.zeros(
            layout.num_layers, 2, num_blocks, layout.block_size, layout.num_kv_heads, layout.head_dim,
            dtype=getattr(torch, layout.dtype),
        )

    def _slots(self, block_table: Sequence[int], positions: Sequence[int]) -> list[int]:
        bs = self.block_size
        return [block_table[p // bs] * bs + p % bs for p in positions]

    def prefill(self, token_ids: Sequence[int], start: int, block_table: Sequence[int]) -> torch.Tensor:
        """Run ``token_ids`` at positions ``start..``, writing their KV; returns the last token's logits [V]."""
        count = len(token_ids)
        pad = padded_size(count, self.prefill_sizes, "a prefill chunk holds {} tokens") - count
        positions = list(range(start, start + count))
        blocks = self._context_blocks([start + count])
        logits = self._run(
            "prefill",
            input_ids=[list(token_ids) + [0] * pad],
            position_ids=[positions + [0] * pad],
            slot_mapping=[self._slots(block_table, positions) + [0] * pad],
            block_tables=[_padded_table(block_table, blocks)],
            logits_index=[count - 1],
        )
        return logits[0]

    def decode(
        self, token_ids: Sequence[int], positions: Sequence[int], block_tables: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """One token for each sequence at its position; returns logits [len(token_ids), V]."""
        batch = len(token_ids)
        pad = padded_size(batch, self.decode_sizes, "a decode step holds {} sequences") - batch
        blocks = self._context_blocks([p + 1 for p in positions])
        tables = [_padded_table(t, blocks) for t in block_tables]
        slots = [self._slots(t, [p])[0] for t, p in zip(block_tables, positions)]
        logits = self._run(
            "decode",
            input_ids=[[t] for t in token_ids] + [[0]] * pad,
            position_ids=[[p] for p in positions] + [[0]] * pad,
            slot_mapping=[[s] for s in slots] + [[0]] * pad,
            block_tables=tables + [[PAD_BLOCK] * blocks] * pad,
            logits_index=[0] * (batch + pad),
        )
        return logits[:batch]

    def _context_blocks(self, context_lengths: Sequence[int]) -> int:
        return -(-max(context_lengths) // self.block_size)

    def _run(self, kind: str, **lists: list) -> torch.Tensor:
        inputs = {name: torch.tensor(value, dtype=torch.long) for name, value in lists.items()}
        batch, tokens = inputs["input_ids"].shape
        program = program_for(self.programs.values(), kind, batch, tokens)
        self._check_bounds(inputs)
        return program.run(*inputs.values(), self.kv_cache)[0]

    def _check_bounds(self, inputs: dict[str, torch.Tensor]) -> None:
        limits = {
            "input_ids": self.vocab_size,
            "block_tables": self.num_blocks,
            "slot_mapping": self.num_blocks * self.block_size,
        }
        for name, limit in limits.items():
            tensor = inputs[name]
            if tensor.numel() and (int(tensor.min()) < 0 or int(tensor.max()) >= limit):
                raise ProgramShapeError(f"{name} out of range [0, {limit})")
        max_blocks = -(-self.manifest.buckets.max_context // self.block_size)
        if inputs["block_tables"].shape[1] > max_blocks:
            raise ProgramShapeError(f"context beyond the artifact's max context {self.manifest.buckets.max_context}")


def _padded_table(table: Sequence[int], blocks: int) -> list[int]:
    """The first ``blocks`` entries of a block table, padded with the padding block."""
    head = list(table[:blocks])
    return head + [PAD_BLOCK] * (blocks - len(head))
