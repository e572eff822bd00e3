"""ingot's paged KV-cache attention, injected into transformers' own modeling code.

transformers passes unknown keyword arguments of the model's forward down to the attention
function, so the per-step paging tensors reach every layer without a rewrite of the model.
The cache is one tensor ``kv_cache[layer, k|v, block, slot_in_block, kv_head, head_dim]``, in float32 or
bfloat16 (``--kv-cache-dtype``): keys and values are rounded to the cache's dtype when written, and read back into
the query's dtype (float32) for the attention itself.

Every program, prefill or decode, is the same computation:
1. write this step's keys and values into the cache at ``slot_mapping``;
2. gather each sequence's context blocks through its ``block_table`` (its width is the
   program's dynamic dimension, so the cost follows the real context length of the batch);
3. attend causally by ``position_ids``: key slot ``j`` holds position ``j`` of the sequence, so a query
   at position ``p`` sees keys ``j <= p``. Padding blocks and padded tokens fall outside that
   mask by construction, and key 0 is always visible, so no row is ever fully masked.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from ingot.compile.kernels import DECODE_HEAD_DIMS

ATTENTION_NAME = "ingot_paged"


def paged_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    block_tables: torch.Tensor,
    position_ids: torch.Tensor,
    scaling: float | None = None,
    decode_kernel: bool = False,
    **_: object,
) -> tuple[torch.Tensor, None]:
    """query [B, Hq, N, D], key/value [B, Hkv, N, D] -> output [B, N, Hq, D]. ``decode_kernel``: a decode step
    calls ingot's paged decode attention kernel (ingot/compile/kernels) instead of tensor ops."""
    batch, num_heads, num_tokens, head_dim = query.shape
    num_kv_heads = key.shape[1]
    group = num_heads // num_kv_heads
    block_size = kv_cache.shape[3]

    # Index the cache itself, not a view of it: a write through a view is captured as a copy of the
    # whole cache, while a direct indexed write compiles to an in-place scatter of just these slots.
    slots = slot_mapping.reshape(-1)
    layer = torch.full_like(slots, module.layer_idx)
    blocks, offsets = slots // block_size, slots % block_size
    for kind, new in enumerate((key, value)):
        where = (layer, torch.full_like(slots, kind), blocks, offsets)
        kv_cache.index_put_(where, new.transpose(1, 2).reshape(-1, num_kv_heads, head_dim).to(kv_cache.dtype))
    if decode_kernel and num_tokens == 1 and head_dim in DECODE_HEAD_DIMS:
        out = torch.ops.ingot.paged_decode_attention(
            query.reshape(batch, num_heads, head_dim), kv_cache, module.layer_idx, block_tables,
            position_ids.reshape(batch) + 1, scaling if scaling is not None else head_dim**-0.5,
        )
        return out.reshape(batch, 1, num_heads, head_dim), None

    layer_cache = kv_cache[module.layer_idx]

    context_len = block_tables.shape[1] * block_size
    # [B, nb, bs, Hkv, D] -> [B, Hkv, T, D], in the query's dtype: a bfloat16 cache is read at half the bytes and
    # converted as it is gathered
    shape = (batch, context_len, num_kv_heads, head_dim)
    keys = layer_cache[0][block_tables].to(query.dtype).reshape(shape).transpose(1, 2)
    values = layer_cache[1][block_tables].to(query.dtype).reshape(shape).transpose(1, 2)

    key_positions = torch.arange(context_len, device=query.device)
    visible = key_positions.view(1, 1, 1, -1) <= position_ids.reshape(batch, 1, num_tokens, 1)
    # One fused attention kernel over materialised inputs. Written as plain matmuls, inductor fuses
    # the query's rotary embedding into the score reduction and recomputes it for every key.
    if num_tokens == 1:
        # Decode: the query heads sharing a KV head become that head's query rows ([B, Hkv, group, D]),
        # so keys are read once per KV head instead of expanded to every query head, and the scores
        # are one small matrix product per KV head rather than a vector product per query head.
        grouped = query.reshape(batch, num_kv_heads, group, head_dim)
        out = torch.nn.functional.scaled_dot_product_attention(grouped, keys, values, attn_mask=visible, scale=scaling)
    else:
        out = torch.nn.functional.scaled_dot_product_attention(
            query, keys, values, attn_mask=visible, scale=scaling, enable_gqa=True
        )
    return out.reshape(batch, num_heads, num_tokens, head_dim).transpose(1, 2), None


def _no_mask(*_: object, **__: object) -> None:
    """The attention above builds its own mask from positions; the model must not build one."""
    return None


def register() -> None:
    AttentionInterface.register(ATTENTION_NAME, paged_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, _no_mask)
