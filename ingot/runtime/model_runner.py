"""Runs one model step: pads it to a size a program takes, maps positions to cache slots, calls the program."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ingot.artifacts.manifest import Manifest
from ingot.errors import ProgramShapeError
from ingot.runtime.block_manager import PAD_BLOCK
from ingot.runtime.buckets import padded_size, step_sizes
from ingot.runtime.kv_sizing import blocks_for_tokens
from ingot.runtime.programs import CompiledProgram, load_programs, program_for


class ModelRunner:
    def __init__(self, directory: Path, manifest: Manifest, num_blocks: int) -> None:
        if num_blocks < 2:
            raise ValueError("the KV cache needs at least 2 blocks (one is the padding block)")
        self.manifest = manifest
        self.programs = load_programs(directory, manifest)
        layout = manifest.kv_cache
        self.block_size = layout.block_size
        self.num_blocks = num_blocks
        self.vocab_size = next(o.shape[-1] for o in manifest.programs[0].outputs if o.name == "logits")
        self.prefill_sizes = step_sizes(manifest.programs, "prefill", lambda spec: spec.tokens)
        self.prefill_batches = step_sizes(manifest.programs, "prefill", lambda spec: spec.batch)
        self.decode_sizes = step_sizes(manifest.programs, "decode", lambda spec: spec.batch)
        self.kv_cache = torch.zeros(
            layout.num_layers, 2, num_blocks, layout.block_size, layout.num_kv_heads, layout.head_dim,
            dtype=getattr(torch, layout.dtype),
        )

    def _slots(self, block_table: Sequence[int], positions: Sequence[int]) -> list[int]:
        bs = self.block_size
        return [block_table[p // bs] * bs + p % bs for p in positions]

    def prefill(
        self, token_ids: Sequence[Sequence[int]], starts: Sequence[int], block_tables: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """Each sequence's chunk ``token_ids[i]`` at positions ``starts[i]..``, writing their KV, all in one step
        (shorter chunks padded to the longest); returns each chunk's last-token logits [len(token_ids), V]."""
        return self.prefill_with_hidden_states(token_ids, starts, block_tables)[0]

    def prefill_with_hidden_states(
        self, token_ids: Sequence[Sequence[int]], starts: Sequence[int], block_tables: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``prefill``, and the final hidden states of every chunk's tokens [len(token_ids), width, hidden] (row i's
        first ``len(token_ids[i])`` are its tokens'), or None when the prefill program does not return them."""
        limit = "a prefill chunk holds {} tokens"
        width = max((padded_size(len(chunk), self.prefill_sizes, limit) for chunk in token_ids), default=1)
        outputs = self._step("prefill", token_ids, starts, block_tables, width, self.prefill_batches)
        hidden = outputs.get("hidden_states")
        return outputs["logits"][: len(token_ids)], None if hidden is None else hidden[: len(token_ids)]

    @property
    def scores_prompts(self) -> bool:
        """Whether this artifact can turn prompt positions into logits: its prefill returns hidden states and it has
        a ``logits`` program (cpu artifacts built since prompt logprobs exist)."""
        prefill_outputs = {o.name for p in self.programs.values() if p.spec.kind == "prefill" for o in p.spec.outputs}
        return "hidden_states" in prefill_outputs and self.max_logits_rows > 0

    @property
    def max_logits_rows(self) -> int:
        """The most hidden-state rows one call of the ``logits`` program takes (0: no such program)."""
        return max((p.spec.batch[1] for p in self.programs.values() if p.spec.kind == "logits"), default=0)

    def logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Final hidden states [rows, hidden] (at most ``max_logits_rows``) -> logits [rows, V], by the ``logits``
        program."""
        rows = hidden_states.shape[0]
        program = program_for(self.programs.values(), "logits", rows)
        return _named_outputs(program, program.run(hidden_states.contiguous()))["logits"]

    def decode(
        self, token_ids: Sequence[int], positions: Sequence[int], block_tables: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """One token for each sequence at its position; returns logits [len(token_ids), V]."""
        outputs = self._step("decode", [[t] for t in token_ids], positions, block_tables, 1, self.decode_sizes)
        return outputs["logits"][: len(token_ids)]

    def _step(
        self, kind: str, chunks: Sequence[Sequence[int]], starts: Sequence[int], block_tables: Sequence[Sequence[int]],
        width: int, batch_sizes: list[int],
    ) -> dict[str, torch.Tensor]:
        """Rows of ``width`` tokens, one per sequence, plus padding rows up to a batch a program takes; the program's
        outputs by name, padding rows included."""
        batch = len(chunks)
        padding_rows = padded_size(batch, batch_sizes, f"a {kind} step holds {{}} sequences") - batch
        blocks = self._context_blocks([start + len(chunk) for chunk, start in zip(chunks, starts)])
        inputs: dict[str, list] = {name: [] for name in ("input_ids", "position_ids", "slot_mapping", "block_tables")}
        for chunk, start, table in zip(chunks, starts, block_tables):
            pad = [0] * (width - len(chunk))
            positions = list(range(start, start + len(chunk)))
            inputs["input_ids"].append(list(chunk) + pad)
            inputs["position_ids"].append(positions + pad)
            inputs["slot_mapping"].append(self._slots(table, positions) + pad)
            inputs["block_tables"].append(_padded_table(table, blocks))
        for _ in range(padding_rows):
            for name in ("input_ids", "position_ids", "slot_mapping"):
                inputs[name].append([0] * width)
            inputs["block_tables"].append([PAD_BLOCK] * blocks)
        logits_index = [len(chunk) - 1 for chunk in chunks] + [0] * padding_rows
        return self._run(kind, **inputs, logits_index=logits_index)

    def _context_blocks(self, context_lengths: Sequence[int]) -> int:
        return blocks_for_tokens(max(context_lengths), self.block_size)

    def _run(self, kind: str, **lists: list) -> dict[str, torch.Tensor]:
        inputs = {name: torch.tensor(value, dtype=torch.long) for name, value in lists.items()}
        batch, tokens = inputs["input_ids"].shape
        program = program_for(self.programs.values(), kind, batch, tokens)
        self._check_bounds(inputs)
        return _named_outputs(program, program.run(*inputs.values(), self.kv_cache))

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
        max_blocks = blocks_for_tokens(self.manifest.buckets.max_context, self.block_size)
        if inputs["block_tables"].shape[1] > max_blocks:
            raise ProgramShapeError(f"context beyond the artifact's max context {self.manifest.buckets.max_context}")


def _named_outputs(program: CompiledProgram, outputs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """A program's outputs by the names its manifest entry gives them (targets may return different lists)."""
    return dict(zip((spec.name for spec in program.spec.outputs), outputs))


def _padded_table(table: Sequence[int], blocks: int) -> list[int]:
    """The first ``blocks`` entries of a block table, padded with the padding block."""
    head = list(table[:blocks])
    return head + [PAD_BLOCK] * (blocks - len(head))
