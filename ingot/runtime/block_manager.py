"""KV-cache blocks: a free-block allocator with prefix caching.

A full block is keyed by a sha256 of every token up to its end, so sequences that share a prompt
prefix share its blocks (reference-counted). A block whose last user leaves keeps its contents
and its key in the free list: it is reused by key if the same prefix comes back, or evicted,
least recently freed first, when a fresh block is needed.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence as TokenIds

from ingot.runtime.kv_sizing import blocks_for_tokens
from ingot.runtime.sequence import Sequence

PAD_BLOCK = 0  # never allocated: the padded tokens of every step write there


def block_key(parent: bytes | None, tokens: TokenIds[int]) -> bytes:
    """A digest, not Python's hash: a prompt crafted to collide with another's key would be served that prompt's
    cache, and tuples of ints collide on purpose easily (vLLM's CVE-2025-25183)."""
    digest = hashlib.sha256(parent or b"")
    digest.update(array("q", tokens).tobytes())
    return digest.digest()


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 2:
            raise ValueError("the KV cache needs at least 2 blocks (one is the padding block)")
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.ref_counts = [0] * num_blocks
        self.keys: list[bytes | None] = [None] * num_blocks
        self.cached: dict[bytes, int] = {}  # prefix key -> block id
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(1, num_blocks))
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0

    @property
    def capacity(self) -> int:
        return self.num_blocks - 1

    @property
    def num_used(self) -> int:
        return self.capacity - len(self.free)

    def blocks_for(self, num_tokens: int) -> int:
        return blocks_for_tokens(num_tokens, self.block_size)

    def allocate(self, seq: Sequence) -> bool:
        """Blocks for all of ``seq``'s tokens, reusing cached prefix blocks; False if they do not fit.

        The last token is never taken from the cache: its logits start (or resume) the reply. Nothing is, for a
        sequence that scores its prompt: prompt logprobs come from running every prompt token (vLLM's rule too).
        """
        bs = self.block_size
        matched: list[int] = []
        keys: list[bytes] = []
        reusable = not seq.scores_prompt
        for index in range((seq.num_tokens - 1) // bs if reusable else 0):
            key = block_key(keys[-1] if keys else None, seq.token_ids[index * bs : (index + 1) * bs])
            block = self.cached.get(key)
            if block is None:
                break
            matched.append(block)
            keys.append(key)
        fresh = self.blocks_for(seq.num_tokens) - len(matched)
        if fresh > len(self.free) - sum(1 for b in matched if b in self.free):
            return False
        for block in matched:
            if self.ref_counts[block] == 0:
                del self.free[block]
            self.ref_counts[block] += 1
        seq.block_table = matched + [self._take_fresh() for _ in range(fresh)]
        seq.block_keys = keys
        seq.num_computed_tokens = len(matched) * bs
        self.prefix_query_tokens += seq.num_tokens if reusable else 0
        self.prefix_hit_tokens += seq.num_computed_tokens
        return True

    def can_append(self, seq: Sequence) -> bool:
        return seq.num_tokens <= len(seq.block_table) * self.block_size or bool(self.free)

    def append(self, seq: Sequence) -> None:
        """Room for the sequence's newest token."""
        if seq.num_tokens > len(seq.block_table) * self.block_size:
            seq.block_table.append(self._take_fresh())

    def seal(self, seq: Sequence) -> None:
        """Key the blocks that became full and computed, so later prompts can reuse them."""
        bs = self.block_size
        for index in range(len(seq.block_keys), seq.num_computed_tokens // bs):
            parent = seq.block_keys[-1] if seq.block_keys else None
            key = block_key(parent, seq.token_ids[index * bs : (index + 1) * bs])
            block = seq.block_table[index]
            if self.keys[block] is None and key not in self.cached:
                self.keys[block] = key
                self.cached[key] = block
            seq.block_keys.append(key)

    def free_blocks(self, seq: Sequence) -> None:
        for block in reversed(seq.block_table):  # a sequence's tail is evicted before its shared head
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self.free[block] = None
        seq.block_table = []
        seq.block_keys = []
        seq.num_computed_tokens = 0

    def _take_fresh(self) -> int:
        block, _ = self.free.popitem(last=False)
        key = self.keys[block]
        if key is not None:  # evict what it cached
            del self.cached[key]
            self.keys[block] = None
        self.ref_counts[block] = 1
        return block
