"""FCFS continuous batching over the program shapes an artifact has.

Each step is either one prefill chunk (one sequence, at most the largest prefill size, split where
padding would cost more than a second step) or one decode batch (every running sequence past its
prefill, at most the largest decode batch). New requests are admitted between steps; a sequence that
runs out of KV blocks preempts the newest running sequence, whose blocks are freed and whose tokens
are recomputed when it is re-admitted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from ingot.runtime.block_manager import BlockManager
from ingot.runtime.programs import padded_size
from ingot.runtime.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledStep:
    kind: Literal["prefill", "decode"]
    seqs: list[Sequence]
    num_tokens: int  # prefill: the chunk's length, starting at seqs[0].num_computed_tokens


def prefill_chunk(remaining: int, sizes: list[int], cap: int) -> int:
    """How many of a prompt's ``remaining`` tokens the next prefill step computes: as many as ``cap`` allows,
    unless stopping at a smaller size a program takes and padding the rest computes fewer tokens in all (with
    static programs of 16, ..., 128, 256 tokens, a 134-token prompt runs as 128 + 6, not padded to 256)."""
    def padded(tokens: int) -> int:
        return padded_size(tokens, sizes, "a prefill chunk holds {} tokens")

    chunk = min(remaining, cap)
    below = [b for b in sizes if b < chunk]
    if below and below[-1] + padded(chunk - below[-1]) < padded(chunk):
        return below[-1]
    return chunk


class Scheduler:
    def __init__(self, blocks: BlockManager, max_batch: int, prefill_sizes: list[int], max_prefill_tokens: int) -> None:
        """``prefill_sizes``: the token counts a prefill step runs at unpadded; ``max_prefill_tokens`` caps a chunk."""
        self.blocks = blocks
        self.max_batch = max_batch
        self.prefill_sizes = prefill_sizes
        self.max_prefill_tokens = max_prefill_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledStep | None:
        prefilling = next((s for s in self.running if s.is_prefilling), None)
        if prefilling is None and self.waiting and len(self.running) < self.max_batch:
            if self.blocks.allocate(self.waiting[0]):
                prefilling = self.waiting.popleft()
                prefilling.status = SequenceStatus.RUNNING
                self.running.append(prefilling)
        if prefilling is not None:
            chunk = prefill_chunk(prefilling.num_uncomputed, self.prefill_sizes, self.max_prefill_tokens)
            return ScheduledStep("prefill", [prefilling], chunk)
        return self._schedule_decode()

    def _schedule_decode(self) -> ScheduledStep | None:
        batch: list[Sequence] = []
        for seq in list(self.running):
            if seq not in self.running:  # preempted below to make room for an earlier one
                continue
            while not self.blocks.can_append(seq):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                self.blocks.append(seq)
                batch.append(seq)
                if len(batch) == self.max_batch:
                    break
        return ScheduledStep("decode", batch, 1) if batch else None

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free_blocks(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def finish(self, seq: Sequence, reason: str) -> None:
        """Remove a sequence (finished or aborted) wherever it is, freeing its blocks at once."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free_blocks(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
