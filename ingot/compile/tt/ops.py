"""What a lowered program is made of, read from the plugin's MLIR dumps and error messages."""

from __future__ import annotations

import re
from collections import Counter

# Generic-form MLIR operations: %3 = "ttnn.matmul"(%1, %2) ...
_TTNN_OP = re.compile(r'"(ttnn\.[A-Za-z0-9_]+)"\(')
# tt-mlir's conversion failure: failed to legalize operation 'stablehlo.triangular_solve'
_NOT_LEGALIZED = re.compile(r"failed to legalize operation '([\w.]+)'")
# torchax has no JAX lowering for an aten op: its interpreter asserts with the op as the message
_NO_TORCHAX_LOWERING = re.compile(r"(?:No lowering found for|AssertionError:?)\s*\(?'?(aten\.[\w.]+)")

# An activation tt-mlir fused into another op's attributes: an eltwise op's `activations`,
# `input_tensor_a_activations` / `input_tensor_b_activations` (#ttnn.unary_with_param<op_type = exp>), a matmul's
# `fused_activation` (the same form) or `activation = "silu"`.
_FUSED = re.compile(r'unary_with_param<op_type = (\w+)|\bactivation = "(\w+)"')
FUSED_SUFFIX = " (fused)"

# Ops that manage buffers and the device rather than compute; listed, but apart from the compute ops.
BOOKKEEPING = frozenset({"ttnn.deallocate", "ttnn.get_device", "ttnn.to_layout", "ttnn.to_device", "ttnn.from_device"})


def op_histogram(ttnn_mlir: str) -> dict[str, int]:
    """TTNN op name -> count, most frequent first. An activation fused into another op counts too, as
    ``ttnn.<activation> (fused)``: at 2,048 keys tt-mlir fuses a softmax's exp into a ``ttnn.subtract`` and a SiLU
    into the ``ttnn.multiply`` that follows it, which would otherwise vanish from the histogram."""
    counts: Counter[str] = Counter()
    for line in ttnn_mlir.splitlines():
        ops = _TTNN_OP.findall(line)
        if ops:
            counts.update(ops)
            counts.update(f"ttnn.{a or b}{FUSED_SUFFIX}" for a, b in _FUSED.findall(line))
    return dict(counts.most_common())


def is_fused(op: str) -> bool:
    """Whether a histogram entry is an activation fused into another op (already counted as that op)."""
    return op.endswith(FUSED_SUFFIX)


def unlowered_ops(error_text: str) -> list[str]:
    """The ops an error says did not lower (StableHLO ops tt-mlir cannot legalize, aten ops torchax cannot map)."""
    found = _NOT_LEGALIZED.findall(error_text) + _NO_TORCHAX_LOWERING.findall(error_text)
    return sorted(set(found))
