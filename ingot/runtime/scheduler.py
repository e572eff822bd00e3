"""FCFS continuous batching over the program shapes an artifact has.

Each step is either a prefill (a chunk of each of a few prompts of similar length, at most the largest prefill size
each, split where padding would cost more than a second step) or one decode batch (every running sequence past its
prefill, at most the largest decode batch). New requests are admitted between steps; a sequence that runs out of
KV blocks preempts the newest running sequence, whose blocks are freed and whose tokens are recomputed when it is
re-admitted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from ingot.runtime.block_manager import BlockManager
from ingot.runtime.buckets import padded_size
from ingot.runtime.sequence import Sequence

# A prefill step pads its chunks to the longest: a prompt joins one if that computes at most this much more than
# running the chunks in steps of their own (prompts of one length share a step whatever their number).
MAX_PREFILL_PADDING = 1.25


@dataclass
class ScheduledStep:
    kind: Literal["prefill", "decode"]
    seqs: list[Sequence]
    num_tokens: list[int]  # each sequence's tokens this step, from its num_computed_tokens on


def prefill_chunk(remaining: int, sizes: list[int], cap: int) -> int:
    """How many of a prompt's ``remaining`` tokens the next prefill step computes: as many as ``cap`` allows,
    unless stopping at a smaller size a program takes and padding the rest computes fewer tokens in all (with
    static programs of 16, ..., 128, 256 tokens, a 134-token prompt runs as 128 + 6, not padded to 256)."""
    chunk = min(remaining, cap)
    below = [b for b in sizes if b < chunk]
    if below and below[-1] + _padded(chunk - below[-1], sizes) < _padded(chunk, sizes):
        return below[-1]
    return chunk


def _padded(tokens: int, sizes: list[int]) -> int:
    """The tokens a prefill chunk of ``tokens`` computes, padding included."""
    return padded_size(tokens, sizes, "a prefill chunk holds {} tokens")


class Scheduler:
    def __init__(
        self, blocks: BlockManager, max_batch: int, prefill_sizes: list[int], max_prefill_tokens: int,
        max_prefill_batch: int = 1,
    ) -> None:
        """``prefill_sizes``: the token counts a prefill chunk runs at unpadded; ``max_prefill_tokens`` caps the tokens
        of a prefill step, ``max_prefill_batch`` its sequences."""
        self.blocks = blocks
        self.max_batch = max_batch
        self.prefill_sizes = prefill_sizes
        self.max_prefill_tokens = max_prefill_tokens
        self.max_prefill_batch = max_prefill_batch
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledStep | None:
        return self._schedule_prefill() or self._schedule_decode()

    def _schedule_prefill(self) -> ScheduledStep | None:
        """Sequences part-way through their prompt first, then waiting ones in arrival order while they fit."""
        step = ScheduledStep("prefill", [], [])
        for seq in self.running:
            if seq.is_prefilling and not self._join(step, seq):
                return step
        while self.waiting and len(self.running) < self.max_batch and len(step.seqs) < self.max_prefill_batch:
            seq = self.waiting[0]
            if not self.blocks.allocate(seq):
                break
            self.waiting.popleft()
            self.running.append(seq)
            if not self._join(step, seq):  # admitted all the same: it leads the next step
                break
        return step if step.seqs else None

    def _join(self, step: ScheduledStep, seq: Sequence) -> bool:
        """Add ``seq``'s next chunk to a prefill step, unless the step's caps or padding rule it out."""
        sizes = self.prefill_sizes
        chunk = prefill_chunk(seq.num_uncomputed, sizes, self.max_prefill_tokens)
        if step.seqs:
            together = (len(step.seqs) + 1) * _padded(max(*step.num_tokens, chunk), sizes)
            apart = sum(_padded(n, sizes) for n in [*step.num_tokens, chunk])
            if (
                len(step.seqs) == self.max_prefill_batch
                or sum(step.num_tokens) + chunk > self.max_prefill_tokens
                or together > MAX_PREFILL_PADDING * apart
            ):
                return False
        step.seqs.append(seq)
        step.num_tokens.append(chunk)
        return True

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
        return ScheduledStep("decode", batch, [1] * len(batch)) if batch else None

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free_blocks(seq)
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def finish(self, seq: Sequence) -> None:
        """Remove a sequence (finished or aborted) wherever it is, freeing its blocks at once."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free_blocks(seq)
