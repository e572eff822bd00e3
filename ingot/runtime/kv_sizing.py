"""KV-cache sizing in one place: bytes per block, blocks per sequence, and how many blocks a memory budget buys."""

from __future__ import annotations

from ingot.artifacts.manifest import KVCacheLayout
from ingot.errors import OptionError
from ingot.sizes import ceil_div

DEFAULT_KV_CACHE_GB = 1.0
_ITEM_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def kv_block_bytes(layout: KVCacheLayout) -> int:
    """One block's keys and values across every layer."""
    return 2 * layout.num_layers * layout.block_size * layout.num_kv_heads * layout.head_dim * _ITEM_BYTES[layout.dtype]


def blocks_for_tokens(num_tokens: int, block_size: int) -> int:
    """The blocks that hold ``num_tokens`` tokens of one sequence."""
    return ceil_div(num_tokens, block_size)


def kv_cache_blocks(
    layout: KVCacheLayout, max_context: int, kv_cache_gb: float | None = None, num_blocks: int | None = None
) -> int:
    """The cache's block count: ``num_blocks`` as given, else what ``kv_cache_gb`` (default 1 GiB) holds. Refused
    unless it holds one ``max_context``-token sequence beside the padding block."""
    if kv_cache_gb is not None and not kv_cache_gb > 0:
        raise OptionError(f"--kv-cache-gb must be more than 0, not {kv_cache_gb}")
    if num_blocks is None:
        budget = (DEFAULT_KV_CACHE_GB if kv_cache_gb is None else kv_cache_gb) * 2**30
        num_blocks = int(budget // kv_block_bytes(layout))
    needed = blocks_for_tokens(max_context, layout.block_size) + 1
    if num_blocks < needed:
        raise OptionError(
            f"the KV cache needs at least {needed} blocks to hold one {max_context}-token sequence, "
            f"not {num_blocks}: raise --kv-cache-gb"
        )
    return num_blocks
