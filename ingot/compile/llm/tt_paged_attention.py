"""Paged attention over Tenstorrent's KV-cache layout, for the programs of a TT target.

Where the cpu programs keep one cache tensor for all layers and write it by slot, a TT program keeps per layer a key
and a value cache ``[blocks, kv_heads, block_size, head_dim]`` (TT's paged layout) and writes them with TT's own
paged cache ops (tt/paged_cache.py), in place: a decode step with ``paged_update_cache`` (each sequence's token at its
position), a prefill step with ``paged_fill_cache`` (the chunk's tokens from the block its first position starts,
which must be the start of a block). Indexed writes into one all-layer cache lower on TT to a scatter that reads and
rewrites the whole cache for every layer. The attention itself is paged_attention's.
"""

from __future__ import annotations

import torch

from ingot.compile.tt import paged_cache  # noqa: F401  (registers torch.ops.ingot.tt_paged_*)
from ingot.sizes import ceil_div


def write_paged_cache(
    layer: int,
    key: torch.Tensor,
    value: torch.Tensor,
    kv_cache: list[torch.Tensor],
    block_tables: torch.Tensor,
    position_ids: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write this step's ``key`` and ``value`` [B, kv_heads, N, head_dim] into layer ``layer``'s caches (both
    returned)."""
    caches = kv_cache[2 * layer], kv_cache[2 * layer + 1]
    batch, num_kv_heads, num_tokens, head_dim = key.shape
    if num_tokens == 1:
        positions = position_ids[:, 0]
        for cache, new in zip(caches, (key, value)):
            update = new.transpose(1, 2).reshape(1, batch, num_kv_heads, head_dim)
            cache.copy_(torch.ops.ingot.tt_paged_update_cache(cache, update, positions, block_tables))
        return caches
    # A prefill chunk fills whole blocks from its first position's block: the block table from there on, padded with
    # the padding block (0) where the chunk's padded tokens run past the end of the table.
    block_size = caches[0].shape[2]
    width = ceil_div(num_tokens, block_size)
    padded = torch.nn.functional.pad(block_tables, (0, width))
    first = (position_ids[:, :1] // block_size) + torch.arange(width, device=block_tables.device)
    chunk_tables = torch.gather(padded, 1, first)
    for row in range(batch):
        index = torch.full((1,), row, dtype=block_tables.dtype, device=block_tables.device)
        for cache, new in zip(caches, (key, value)):
            cache.copy_(torch.ops.ingot.tt_paged_fill_cache(cache, new[row : row + 1], chunk_tables, index))
    return caches


def gather_context(cache: torch.Tensor, block_tables: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Each sequence's context from a paged cache: [B, kv_heads, blocks * block_size, head_dim]."""
    batch, width = block_tables.shape
    _, num_kv_heads, block_size, head_dim = cache.shape
    blocks = cache[block_tables].to(dtype)  # [B, blocks, kv_heads, block_size, head_dim]
    return blocks.transpose(1, 2).reshape(batch, num_kv_heads, width * block_size, head_dim)
