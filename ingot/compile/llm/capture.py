"""Capture a model step as a torch.export program for one ProgramPlan."""

from __future__ import annotations

import torch
from torch.export import Dim, ExportedProgram

from ingot.artifacts.manifest import KVCacheLayout, TensorSpec
from ingot.compile.llm.step_module import CausalLMStep, LogitsHead
from ingot.compile.plan import ProgramPlan

# The number of cache blocks is chosen at serve time (--kv-cache-gb), so it is always dynamic.
MAX_CACHE_BLOCKS = 1 << 22


def _example(low: int, high: int, avoid: set[int]) -> int:
    """An example size inside [low, high] that export will not specialise on (0, 1, or another dim's size)."""
    if low == high:
        return low
    for value in range(max(low, 2), high + 1):
        if value not in avoid:
            return value
    return high


def _dim(name: str, low: int, high: int) -> Dim | None:
    return None if low == high else Dim(name, min=low, max=high)


def capture_program(
    step: CausalLMStep, plan: ProgramPlan, layout: KVCacheLayout, max_blocks: int
) -> tuple[ExportedProgram, list[TensorSpec], list[TensorSpec]]:
    """Export ``step`` for ``plan``; returns the program and its input and output signatures.

    Outputs: ``logits`` [batch, vocab]; a prefill program also ``hidden_states`` [batch, tokens, hidden] (see
    CausalLMStep). A ``logits`` plan is the output head alone (``capture_logits``)."""
    if plan.kind == "logits":
        return capture_logits(step, plan)
    prefill = plan.kind == "prefill"
    step = CausalLMStep(step.model, decode_kernel=plan.decode_kernel, hidden_states=prefill)
    batch = _example(*plan.batch, avoid=set())
    tokens = _example(*plan.tokens, avoid={batch})
    blocks = plan.blocks or _example(1, max_blocks, avoid={batch, tokens})
    num_blocks = plan.cache_blocks or _example(2, MAX_CACHE_BLOCKS, avoid={batch, tokens, blocks})
    # A static cache can be large; export never reads its values, so it is left uninitialised.
    cache_init = torch.zeros if plan.cache_blocks is None else torch.empty
    long = dict(dtype=torch.long)
    # Distinct tensors: export treats one tensor passed twice as one input.
    example = {
        "input_ids": torch.zeros(batch, tokens, **long),
        "position_ids": torch.zeros(batch, tokens, **long),
        "slot_mapping": torch.zeros(batch, tokens, **long),
        "block_tables": torch.zeros(batch, blocks, **long),
        "logits_index": torch.zeros(batch, **long),
        "kv_cache": cache_init(
            layout.num_layers, 2, num_blocks, layout.block_size, layout.num_kv_heads, layout.head_dim,
            dtype=getattr(torch, layout.dtype),
        ),
    }
    b, t = _dim("batch", *plan.batch), _dim("tokens", *plan.tokens)
    nb = None if plan.blocks else Dim("blocks", min=1, max=max_blocks)
    cb = None if plan.cache_blocks else Dim("num_blocks", min=2, max=MAX_CACHE_BLOCKS)
    dynamic = {
        "input_ids": {0: b, 1: t},
        "position_ids": {0: b, 1: t},
        "slot_mapping": {0: b, 1: t},
        "block_tables": {0: b, 1: nb},
        "logits_index": {0: b},
        "kv_cache": {2: cb},
    }
    dynamic = {name: {axis: d for axis, d in axes.items() if d is not None} for name, axes in dynamic.items()}
    with torch.no_grad():
        exported = torch.export.export(step, tuple(example.values()), dynamic_shapes=dynamic)

    B = "batch" if b is not None else batch
    T = "tokens" if t is not None else tokens
    NB = "blocks" if nb is not None else blocks
    CB = "num_blocks" if cb is not None else num_blocks
    cache_shape = [layout.num_layers, 2, CB, layout.block_size, layout.num_kv_heads, layout.head_dim]
    dtypes = {name: str(tensor.dtype).removeprefix("torch.") for name, tensor in example.items()}
    shapes = {
        "input_ids": [B, T],
        "position_ids": [B, T],
        "slot_mapping": [B, T],
        "block_tables": [B, NB],
        "logits_index": [B],
        "kv_cache": cache_shape,
    }
    inputs = [TensorSpec(name=name, dtype=dtypes[name], shape=shape) for name, shape in shapes.items()]
    hidden_size = step.model.config.hidden_size
    model_dtype = str(next(step.model.parameters()).dtype).removeprefix("torch.")  # the cache's may be narrower
    outputs = [TensorSpec(name="logits", dtype=model_dtype, shape=[B, _vocab_size(step)])]
    if prefill:
        outputs.append(TensorSpec(name="hidden_states", dtype=model_dtype, shape=[B, T, hidden_size]))
    return exported, inputs, outputs


def capture_logits(
    step: CausalLMStep, plan: ProgramPlan
) -> tuple[ExportedProgram, list[TensorSpec], list[TensorSpec]]:
    """Export the model's output head for ``plan``: ``hidden_states`` [rows, hidden] -> ``logits`` [rows, vocab],
    rows in ``plan.batch``."""
    head = LogitsHead(step)
    hidden_size = step.model.config.hidden_size
    dtype = next(step.model.parameters()).dtype
    example = torch.zeros(_example(*plan.batch, avoid={hidden_size}), hidden_size, dtype=dtype)
    rows = _dim("rows", *plan.batch)
    dynamic = {"hidden": {0: rows}} if rows is not None else None
    with torch.no_grad():
        exported = torch.export.export(head, (example,), dynamic_shapes=dynamic)
    R = "rows" if rows is not None else plan.batch[0]
    name = str(dtype).removeprefix("torch.")
    inputs = [TensorSpec(name="hidden_states", dtype=name, shape=[R, hidden_size])]
    outputs = [TensorSpec(name="logits", dtype=name, shape=[R, _vocab_size(step)])]
    return exported, inputs, outputs


def _vocab_size(step: CausalLMStep) -> int:
    return step.model.config.vocab_size
