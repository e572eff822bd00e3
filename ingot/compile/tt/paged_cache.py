"""Tenstorrent's paged KV-cache writes as torch ops: ``torch.ops.ingot.tt_paged_update_cache`` (decode) and
``torch.ops.ingot.tt_paged_fill_cache`` (prefill).

A TT program keeps a key and a value cache per layer in TT's paged layout, ``[blocks, kv_heads, block_size,
head_dim]``, and writes them with ttnn's ``paged_update_cache`` / ``paged_fill_cache``, in place. Here the two are
opaque torch ops, so torch.export keeps them whole; their torch implementations (below) define what they compute
and are what the torch program runs in the conversion check, while tt/paged_cache_jax.py maps them to JAX
primitives that lower to the ``tt.paged_update_cache`` / ``tt.paged_fill_cache`` custom calls for the device and to
a scatter on JAX's CPU backend. Both ops return the updated cache; the step copies it back into its input, which
torch.export records as an update of that input (the cache argument the TT program donates).

Importing this module registers the ops: whatever loads a TT program's ``.pt2`` imports it first.
"""

from __future__ import annotations

import torch

# The op names as tt-mlir legalizes them from StableHLO custom calls
UPDATE_CUSTOM_CALL = "tt.paged_update_cache"
FILL_CUSTOM_CALL = "tt.paged_fill_cache"
# ... and the TT-NN ops they become: what the manifest's KV layout says writes the cache
UPDATE_TTNN_OP = "ttnn.paged_update_cache"
FILL_TTNN_OP = "ttnn.paged_fill_cache"


@torch.library.custom_op("ingot::tt_paged_update_cache", mutates_args=())
def paged_update_cache(
    cache: torch.Tensor, value: torch.Tensor, positions: torch.Tensor, page_table: torch.Tensor
) -> torch.Tensor:
    """One token per sequence: ``cache`` [blocks, kv_heads, block_size, head_dim] with ``value[0, b]`` [kv_heads,
    head_dim] written at position ``positions[b]`` of sequence ``b``, whose blocks ``page_table[b]`` lists."""
    block_size = cache.shape[2]
    rows = torch.arange(page_table.shape[0], device=page_table.device)
    blocks = page_table[rows, positions // block_size]
    updated = cache.clone()
    updated[blocks, :, positions % block_size] = value[0].to(cache.dtype)
    return updated


@paged_update_cache.register_fake
def _(cache, value, positions, page_table):
    return torch.empty_like(cache)


@torch.library.custom_op("ingot::tt_paged_fill_cache", mutates_args=())
def paged_fill_cache(
    cache: torch.Tensor, value: torch.Tensor, page_table: torch.Tensor, batch_index: torch.Tensor
) -> torch.Tensor:
    """A run of tokens of one sequence: ``value[0]`` [kv_heads, tokens, head_dim] written at positions 0, 1, ... of
    the blocks ``page_table[batch_index[0]]`` lists (ttnn fills from a block table's first block)."""
    block_size, tokens = cache.shape[2], value.shape[2]
    positions = torch.arange(tokens, device=page_table.device)
    blocks = page_table[batch_index[0], positions // block_size]
    updated = cache.clone()
    updated[blocks, :, positions % block_size] = value[0].transpose(0, 1).to(cache.dtype)
    return updated


@paged_fill_cache.register_fake
def _(cache, value, page_table, batch_index):
    return torch.empty_like(cache)
