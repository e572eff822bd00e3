"""What one run of a lowered TT program costs: FLOPs and DRAM bytes per TTNN op, read from the TTNN MLIR text the
compile keeps beside each ``.ttnn`` (``NAME.ttnn.mlir``, the module the flatbuffer was translated from).

The counting follows tt-perf-report's matmul analysis (a matmul is ``2 * M * K * N`` FLOPs times its batch; its bytes
are the DRAM tensors it reads and writes), extended to every op, and errs low wherever the text leaves room, so that
the times built on it (ingot.compile.tt.roofline) stay lower bounds:

- FLOPs: a matmul or linear ``2 * out_elements * K``; a conv ``2 * out_elements * (in_channels / groups) * kh * kw``;
  any other computing op one FLOP per element of its largest tensor ("vector" FLOPs: element-wise ops, reductions,
  norms, softmax). Ops that only move or view data (reshape, permute, concat, slices, layout changes, typecasts,
  gathers, cache writes, ...) compute nothing.
- Bytes: each tensor an op reads from or writes to DRAM, at its size on the device (the tile-padded shape of its
  layout, in its element type: bfloat8_b is 1088 bytes a 32x32 tile). A reshape is taken to be a view (0 bytes); a
  gather or a slice reads only what it returns; a paged cache write (``paged_update_cache``, ``paged_fill_cache``) reads
  its new rows and writes them in place, never the whole cache.
- Only the program's own functions count: ``const_eval`` functions run once when the program loads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_TILE = re.compile(r"!ttcore\.tile<(\d+)x(\d+), (\w+)>")
_LAYOUT = re.compile(r"^#(ttnn_layout\d*) = #ttnn\.ttnn_layout<(.*)>\s*$")
_LAYOUT_GRID = re.compile(r", <(\d+(?:x\d+)*)>, memref<")
_MEMREF = re.compile(r"memref<((?:\d+x)*)(!ttcore\.tile<\d+x\d+, \w+>|\w+), #(\w+)>")
# tensor<64x128xbf16, #ttnn_layout3>, or with tiles as its element type: tensor<64x128x!ttcore.tile<32x32, bfp_bf8>, ...>
# groups: dims, tile element type, scalar element type, layout alias
_TENSOR = re.compile(r"tensor<((?:\d+x)*)(?:!ttcore\.tile<\d+x\d+, (\w+)>|(\w+))(?:, #([\w.]+))?>")
_ARGUMENT = re.compile(rf"%arg\d+: ({_TENSOR.pattern})")
_OP = re.compile(r'"ttnn\.(\w+)"\(')
_LOC = re.compile(r"\s+loc\(.*\)\s*$")
_FIDELITY = re.compile(r"math_fidelity = (\w+)")
_INT_ATTR = r"\b{} = (\d+) : [su]?i\d+"
_KERNEL = re.compile(r"\bkernel_size = array<i\d+: (\d+), (\d+)>")

# Bits of one value of a scalar element type; block-float types add one shared 8-bit exponent per 16 values.
_ELEMENT_BITS = {"f32": 32, "si32": 32, "u32": 32, "i32": 32, "bf16": 16, "f16": 16, "u16": 16, "u8": 8, "i1": 8}
_BLOCK_FLOAT_BITS = {"bfp_bf8": 8, "bfp_f8": 8, "bfp_bf4": 4, "bfp_f4": 4, "bfp_bf2": 2, "bfp_f2": 2}

MATMUL_OPS = frozenset({"matmul", "linear"})
CONV_OPS = frozenset({"conv2d", "conv_transpose2d", "conv3d"})
# Ops that move, view or convert data and compute nothing.
DATA_MOVEMENT_OPS = frozenset({
    "reshape", "permute", "transpose", "concat", "slice_static", "slice_dynamic", "to_layout", "to_memory_config",
    "to_dtype", "typecast", "to_device", "from_device", "pad", "repeat", "repeat_interleave", "rows_gather",
    "rows_scatter", "embedding", "gather", "scatter", "paged_update_cache", "paged_fill_cache", "update_cache",
    "fill_cache", "deallocate", "get_device", "full", "zeros", "ones", "empty", "arange", "constant", "clone",
})  # fmt: skip
NO_TRAFFIC_OPS = frozenset({"reshape", "deallocate", "get_device"})  # a view, a free, a handle
# Ops that read from their first operand only what they return (rows of a table, a slice of a tensor).
GATHER_OPS = frozenset({"rows_gather", "embedding", "gather", "slice_static", "slice_dynamic"})
IN_PLACE_CACHE_OPS = frozenset({"paged_update_cache", "paged_fill_cache", "update_cache", "fill_cache"})


@dataclass(frozen=True)
class Tensor:
    """A tensor an op takes or gives: its logical shape, and its size as the device holds it."""

    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    in_dram: bool

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class OpCost:
    """One TTNN op of a program run."""

    op: str
    matmul_flops: int  # matmul, linear and conv FLOPs: the FPU's work, bounded by the device's matmul rate
    vector_flops: int  # one per element of the largest tensor of any other computing op
    dram_bytes: int
    math_fidelity: str | None  # the op's compute config (hifi4, hifi2, lofi); None where it has none


def element_bytes(dtype: str) -> float:
    """Bytes a value of a TTNN element type takes (a block-float value with its share of the block's exponent)."""
    if dtype in _BLOCK_FLOAT_BITS:
        return (_BLOCK_FLOAT_BITS[dtype] + 8 / 16) / 8
    return _ELEMENT_BITS.get(dtype, 32) / 8


def _shape(dims: str) -> tuple[int, ...]:
    """``64x128x`` (the dimensions before a memref's or tensor's element type) -> (64, 128)."""
    return tuple(int(d) for d in dims.split("x") if d)


def read_layouts(ttnn_mlir: str) -> dict[str, tuple[int, bool]]:
    """Layout alias -> (bytes of a tensor in it, whether it lives in DRAM). The memref is one core's shard (the
    whole tensor for an interleaved layout, whose grid is 1x1), in tiles or in elements."""
    layouts = {}
    for line in ttnn_mlir.splitlines():
        found = _LAYOUT.match(line)
        if not found:
            continue
        name, body = found.groups()
        memref = _MEMREF.search(body)
        if memref is None:
            continue
        dims, element, buffer = memref.groups()
        count = math.prod(_shape(dims))
        grid = _LAYOUT_GRID.search(body)
        cores = math.prod(int(d) for d in grid.group(1).split("x")) if grid else 1
        tile = _TILE.match(element)
        if tile:
            rows, cols, dtype = tile.groups()
            per_unit = int(rows) * int(cols) * element_bytes(dtype)
        else:
            per_unit = element_bytes(element)
        layouts[name] = (round(count * cores * per_unit), buffer == "dram")
    return layouts


def _tensors(types: str, layouts: dict[str, tuple[int, bool]]) -> list[Tensor]:
    tensors = []
    for dims, tile_dtype, scalar_dtype, layout in _TENSOR.findall(types):
        dtype = tile_dtype or scalar_dtype
        shape = _shape(dims)
        if layout in layouts:
            nbytes, in_dram = layouts[layout]
        else:  # no device layout: count its logical bytes, not as DRAM traffic
            nbytes, in_dram = round(math.prod(shape) * element_bytes(dtype)), False
        tensors.append(Tensor(shape, dtype, nbytes, in_dram))
    return tensors


def _signature(line: str, layouts: dict[str, tuple[int, bool]]) -> tuple[list[Tensor], list[Tensor]]:
    """An op line's operand and result tensors, from its trailing ``: (operand types) -> result types``."""
    line = _LOC.sub("", line)
    arrow = line.rfind(") -> ")
    start = line.rfind(" : (", 0, arrow + 1)
    if arrow < 0 or start < 0:
        return [], []
    return _tensors(line[start + 4 : arrow], layouts), _tensors(line[arrow + 5 :], layouts)


def _int_attr(line: str, name: str) -> int | None:
    found = re.search(_INT_ATTR.format(name), line)
    return int(found.group(1)) if found else None


def _matmul_flops(op: str, line: str, operands: list[Tensor], results: list[Tensor]) -> int:
    if not results or not operands:
        return 0
    out = results[0].elements
    if op in MATMUL_OPS:
        a = operands[0].shape
        k = a[-2] if "transpose_a = true" in line else a[-1]
        return 2 * out * k
    in_channels, groups = _int_attr(line, "in_channels"), _int_attr(line, "groups") or 1
    kernel = _KERNEL.search(line)
    if in_channels is None or kernel is None:
        return 0
    return 2 * out * (in_channels // groups) * int(kernel.group(1)) * int(kernel.group(2))


def _dram(tensors: list[Tensor]) -> int:
    return sum(t.nbytes for t in tensors if t.in_dram)


def _dram_bytes(op: str, operands: list[Tensor], results: list[Tensor]) -> int:
    if op in NO_TRAFFIC_OPS:
        return 0
    if op in GATHER_OPS:
        return _dram(operands[1:]) + 2 * _dram(results)
    if op in IN_PLACE_CACHE_OPS:  # operands: cache, new rows, then indices / page table
        return _dram(operands[1:]) + _dram(operands[1:2])
    return _dram(operands) + _dram(results)


def op_costs(ttnn_mlir: str) -> list[OpCost]:
    """Every TTNN op one run of the program executes (const-eval functions left out), with its FLOPs and bytes."""
    layouts = read_layouts(ttnn_mlir)
    costs = []
    in_const_eval = False
    for line in ttnn_mlir.splitlines():
        if "func.func " in line:
            in_const_eval = '"const_eval"' in line
            continue
        found = _OP.search(line)
        if in_const_eval or not found:
            continue
        op = found.group(1)
        operands, results = _signature(line, layouts)
        matmul = _matmul_flops(op, line, operands, results) if op in MATMUL_OPS | CONV_OPS else 0
        vector = 0
        if not matmul and op not in DATA_MOVEMENT_OPS and op not in MATMUL_OPS | CONV_OPS:
            vector = max((t.elements for t in operands + results), default=0)
        fidelity = _FIDELITY.search(line)
        costs.append(
            OpCost(op, matmul, vector, _dram_bytes(op, operands, results), fidelity.group(1) if fidelity else None)
        )
    return costs


def main_arguments(ttnn_mlir: str) -> list[Tensor]:
    """The tensors the program's entry function takes, in order (weights first, then the step's inputs)."""
    layouts = read_layouts(ttnn_mlir)
    for line in ttnn_mlir.splitlines():
        if "func.func " in line and '"const_eval"' not in line and "@main(" in line:
            head = line.split(") -> ", 1)[0] if ") -> " in line else line
            return _tensors(" ".join(found.group(1) for found in _ARGUMENT.finditer(head)), layouts)
    return []


def mesh_chips(ttnn_mlir: str) -> int:
    """How many chips the program runs on (its device's mesh shape)."""
    found = re.search(r"mesh_shape (\d+)x(\d+)", ttnn_mlir)
    return int(found.group(1)) * int(found.group(2)) if found else 1
