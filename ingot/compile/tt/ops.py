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

# Ops that manage buffers and the device rather than compute; listed, but apart from the compute ops.
BOOKKEEPING = frozenset({"ttnn.deallocate", "ttnn.get_device", "ttnn.to_layout", "ttnn.to_device", "ttnn.from_device"})


def op_histogram(ttnn_mlir: str) -> dict[str, int]:
    """TTNN op name -> count, most frequent first."""
    return dict(Counter(_TTNN_OP.findall(ttnn_mlir)).most_common())


def unlowered_ops(error_text: str) -> list[str]:
    """The ops an error says did not lower (StableHLO ops tt-mlir cannot legalize, aten ops torchax cannot map)."""
    found = _NOT_LEGALIZED.findall(error_text) + _NO_TORCHAX_LOWERING.findall(error_text)
    return sorted(set(found))
