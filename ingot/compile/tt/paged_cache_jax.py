"""The paged KV-cache writes of tt/paged_cache.py as JAX primitives, and their torchax lowerings.

Each primitive lowers two ways: on JAX's CPU backend to a scatter that computes what the torch op computes (the
conversion check runs that), on any other platform (the TT plugin's) to the StableHLO custom call tt-mlir legalizes
to the TT-NN op: ``stablehlo.custom_call @tt.paged_update_cache(cache, value, positions, page_table)`` and
``@tt.paged_fill_cache(cache, value, page_table, batch_index)``, the cache aliased to the result so the write is in
place. Imported by the lowering worker only (it needs jax and torchax).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import mlir

from ingot.compile.tt.paged_cache import FILL_CUSTOM_CALL, UPDATE_CUSTOM_CALL  # also registers the torch ops


def _update_on_cpu(cache, value, positions, page_table):
    block_size = cache.shape[2]
    rows = jnp.arange(page_table.shape[0])
    blocks = page_table[rows, positions // block_size]
    return cache.at[blocks, :, positions % block_size].set(value[0].astype(cache.dtype))


def _fill_on_cpu(cache, value, page_table, batch_index):
    block_size, tokens = cache.shape[2], value.shape[2]
    positions = jnp.arange(tokens)
    blocks = page_table[batch_index[0], positions // block_size]
    return cache.at[blocks, :, positions % block_size].set(jnp.swapaxes(value[0], 0, 1).astype(cache.dtype))


def _primitive(name: str, custom_call: str, on_cpu) -> Primitive:
    primitive = Primitive(name)
    primitive.def_impl(on_cpu)
    primitive.def_abstract_eval(lambda cache, *_: jax.core.ShapedArray(cache.shape, cache.dtype))
    mlir.register_lowering(primitive, jax.ffi.ffi_lowering(custom_call, operand_output_aliases={0: 0}))
    mlir.register_lowering(primitive, mlir.lower_fun(on_cpu, multiple_results=False), platform="cpu")
    return primitive


paged_update_cache_p = _primitive("tt_paged_update_cache", UPDATE_CUSTOM_CALL, _update_on_cpu)
paged_fill_cache_p = _primitive("tt_paged_fill_cache", FILL_CUSTOM_CALL, _fill_on_cpu)


def _int32(x):
    return x.astype(jnp.int32)  # the TT ops take 32-bit positions and block tables


def register_torchax_lowerings() -> None:
    """Map the torch ops onto the primitives for torchax's exported-program interpreter."""
    import torch

    from ingot.compile.tt.torchax_compat import import_torchax

    import_torchax()
    from torchax.ops import ops_registry

    def update(cache, value, positions, page_table):
        return paged_update_cache_p.bind(cache, value, _int32(positions), _int32(page_table))

    def fill(cache, value, page_table, batch_index):
        return paged_fill_cache_p.bind(cache, value, _int32(page_table), _int32(batch_index))

    ops_registry.register_torch_dispatch_op(torch.ops.ingot.tt_paged_update_cache.default, update)
    ops_registry.register_torch_dispatch_op(torch.ops.ingot.tt_paged_fill_cache.default, fill)
