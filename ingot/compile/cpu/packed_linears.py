"""A graph pass for language-model programs: their matrix products go to ingot's ``packed_linear`` kernel (see
ingot/compile/kernels/packed_linear.cpp) on weights packed into its panels, and a tied embedding reads its rows
from the LM head's panels. Every program of an artifact runs the same pass, so they all name the same packed
tensors: the weights file holds one copy, in the layout the kernel reads. A weight may be stored in one of
Tenstorrent's formats (bf16, bfp8, bfp4), holding the values a Tenstorrent device would; the kernel reads it as
stored."""

from __future__ import annotations

import itertools
import operator
from collections import defaultdict
from collections.abc import Callable, Mapping

import torch
from torch import fx

from ingot.artifacts.manifest import PackedLinear
from ingot.artifacts.weight_format import WeightFormat
from ingot.compile.tt.formats import BLOCK, MAGNITUDE_BITS, TTFormat, quantize
from ingot.errors import CompileError
from ingot.sizes import ceil_div

PACK_WIDTH = 48  # columns per packed panel of the kernel: at one input k, three of Tenstorrent's blocks of 16

# A panel's 48 columns at one k are one record; by format, its elements (the packed tensor's last dimension) and
# their type. The block formats hold signed codes (bfp8: one byte each; bfp4: two to a byte), then the three
# blocks' shared exponents: the layout packed_linear.cpp describes.
RECORD_ELEMENTS = {WeightFormat.FP32: 48, WeightFormat.BF16: 48, WeightFormat.BFP8: 51, WeightFormat.BFP4: 27}
PACKED_DTYPE = {
    WeightFormat.FP32: torch.float32,
    WeightFormat.BF16: torch.bfloat16,
    WeightFormat.BFP8: torch.uint8,
    WeightFormat.BFP4: torch.uint8,
}
TT_FORMAT = {
    WeightFormat.BF16: TTFormat.BFLOAT16,
    WeightFormat.BFP8: TTFormat.BFLOAT8_B,
    WeightFormat.BFP4: TTFormat.BFLOAT4_B,
}
_BLOCKS = PACK_WIDTH // BLOCK  # blocks per record
_CHUNK_VALUES = 1 << 22  # weights packed or unpacked at a time: bounded temporaries for an LM head

# How the pass gets a packed weight: from the weights concatenated, in the format (the build packs them once, for
# the weights file), or as an empty stand-in of the packed shape (a lowering only needs shapes: the weights are
# inputs).
Packer = Callable[[str, list[torch.Tensor], WeightFormat], torch.Tensor]


def packed_shape(out_features: int, in_features: int, fmt: WeightFormat = WeightFormat.FP32) -> tuple[int, int, int]:
    return ceil_div(out_features, PACK_WIDTH), in_features, RECORD_ELEMENTS[fmt]


def pack_linear_weight(weight: torch.Tensor, fmt: WeightFormat = WeightFormat.FP32) -> torch.Tensor:
    """[N, K] -> [ceil(N / 48), K, record]: each panel of 48 output columns with its K inputs contiguous, stored in
    ``fmt`` with the values Tenstorrent would hold (``quantize(weight.T, ...).T``: its blocks run along the output
    features)."""
    fmt = WeightFormat(fmt)
    out_features, in_features = weight.shape
    packed = torch.empty(packed_shape(out_features, in_features, fmt), dtype=PACKED_DTYPE[fmt])
    weight = weight.detach().to(torch.float32)
    step = max(1, _CHUNK_VALUES // (PACK_WIDTH * max(in_features, 1)))
    for first in range(0, packed.shape[0], step):
        rows = weight[first * PACK_WIDTH : (first + step) * PACK_WIDTH]
        panels = ceil_div(rows.shape[0], PACK_WIDTH)
        rows = torch.nn.functional.pad(rows, (0, 0, 0, panels * PACK_WIDTH - rows.shape[0]))
        packed[first : first + panels] = _records(rows.reshape(panels, PACK_WIDTH, in_features).transpose(1, 2), fmt)
    return packed


def pack_weights(_: str, weights: list[torch.Tensor], fmt: WeightFormat = WeightFormat.FP32) -> torch.Tensor:
    """The ``Packer`` for real weights."""
    return pack_linear_weight(torch.cat(weights) if len(weights) > 1 else weights[0], fmt)


def empty_packed(_: str, weights: list[torch.Tensor], fmt: WeightFormat = WeightFormat.FP32) -> torch.Tensor:
    """The ``Packer`` for a lowering: uninitialised memory (never touched, so it costs no resident memory)."""
    shape = packed_shape(sum(w.shape[0] for w in weights), weights[0].shape[1], fmt)
    return torch.empty(shape, dtype=PACKED_DTYPE[WeightFormat(fmt)])


def unpack_linear_weight(
    packed: torch.Tensor, out_features: int, fmt: WeightFormat = WeightFormat.FP32
) -> torch.Tensor:
    """The inverse of ``pack_linear_weight``: [ceil(N / 48), K, record] -> the float32 weights [N, K] the kernel
    multiplies by (for a Tenstorrent format, its values as Tenstorrent holds them)."""
    fmt = WeightFormat(fmt)
    panels, in_features, elements = packed.shape
    if packed.dtype != PACKED_DTYPE[fmt] or elements != RECORD_ELEMENTS[fmt]:
        raise ValueError(f"a {packed.dtype} tensor of records of {elements} is not a weight packed as {fmt.value}")
    if fmt is WeightFormat.FP32:
        values = packed
    else:
        step = max(1, _CHUNK_VALUES // (PACK_WIDTH * max(in_features, 1)))
        values = torch.cat([_decoded(packed[first : first + step], fmt) for first in range(0, panels, step)])
    return values.transpose(1, 2).reshape(panels * PACK_WIDTH, in_features)[:out_features]


def _records(columns: torch.Tensor, fmt: WeightFormat) -> torch.Tensor:
    """Float32 panels [p, K, 48] -> their records in ``fmt``."""
    if fmt is WeightFormat.FP32:
        return columns
    if fmt is WeightFormat.BF16:
        return columns.to(torch.bfloat16)  # rounded as Tenstorrent rounds (formats.py)
    # The shared exponent is the block's largest exponent field (formats.py, rule 1); the codes are Tenstorrent's
    # values over the scale of their block's lowest bit, which are whole numbers (exact in float64).
    columns = columns.contiguous()
    blocks = columns.shape[:-1] + (_BLOCKS, BLOCK)
    exponents = ((columns.view(torch.int32) >> 23) & 0xFF).reshape(blocks).amax(-1)
    values = quantize(columns, TT_FORMAT[fmt]).reshape(blocks).double()
    codes = torch.ldexp(values, (_exponent_bias(fmt) - exponents).unsqueeze(-1).double()).round().to(torch.int32)
    if fmt is WeightFormat.BFP8:
        codes = codes.to(torch.int8).view(torch.uint8).reshape(columns.shape)
    else:  # two's complement nibbles; a block's value 2k + w is nibble k of its 32-bit word w
        nibbles = (codes & 15).reshape(blocks[:-1] + (4, 2, 2))  # [..., block, k // 2, k % 2, w]
        codes = (nibbles[..., 0, :] | (nibbles[..., 1, :] << 4)).transpose(-1, -2).flatten(-3).to(torch.uint8)
    return torch.cat([codes, exponents.to(torch.uint8)], dim=-1)


def _decoded(records: torch.Tensor, fmt: WeightFormat) -> torch.Tensor:
    """Records [..., record] in ``fmt`` -> their float32 values [..., 48]."""
    if fmt is WeightFormat.FP32:
        return records
    if fmt is WeightFormat.BF16:
        return records.to(torch.float32)
    exponents = records[..., _exponents_at(fmt) :]
    return _scaled(_codes(records, fmt), exponents.repeat_interleave(BLOCK, dim=-1), fmt)


def _codes(records: torch.Tensor, fmt: WeightFormat) -> torch.Tensor:
    """The signed codes of every column of block-format records, as int32 [..., 48]."""
    if fmt is WeightFormat.BFP8:
        return _signed_byte(records[..., :PACK_WIDTH])
    words = records[..., : PACK_WIDTH // 2].reshape(records.shape[:-1] + (_BLOCKS, 2, 4)).to(torch.int32)
    nibbles = torch.stack([words & 15, words >> 4], dim=-1).flatten(-2)  # [..., block, w, k]
    return _signed_nibble(nibbles.transpose(-1, -2).flatten(-3))


def _signed_byte(codes: torch.Tensor) -> torch.Tensor:
    """uint8 two's complement -> int32."""
    codes = codes.to(torch.int32)
    return codes - ((codes >> 7) << 8)


def _signed_nibble(nibbles: torch.Tensor) -> torch.Tensor:
    """4-bit two's complement -> int32."""
    return nibbles - ((nibbles >> 3) << 4)


def _exponents_at(fmt: WeightFormat) -> int:
    """Where a block format's three exponents start in its record."""
    return RECORD_ELEMENTS[fmt] - _BLOCKS


def _exponent_bias(fmt: WeightFormat) -> int:
    """A block format's weight is code * 2**(exponent - bias)."""
    return 127 + MAGNITUDE_BITS[TT_FORMAT[fmt]] - 1


def _scaled(codes: torch.Tensor, exponents: torch.Tensor, fmt: WeightFormat) -> torch.Tensor:
    """code * 2**(exponent - bias), exactly, as the kernel computes it: the code as a float with the exponent added
    to its exponent field (the format keeps every nonzero result a normal float)."""
    bits = codes.to(torch.float32).view(torch.int32) + (exponents.to(torch.int32) - _exponent_bias(fmt)) * (1 << 23)
    return torch.where(codes == 0, 0.0, bits.view(torch.float32))


def embedding_rows(packed: torch.Tensor, ids: torch.Tensor, fmt: str) -> torch.Tensor:
    """Rows ``ids`` of the float32 weight [N, K] a packed linear multiplies by (a tied embedding reads the LM head's
    panels): [*ids.shape, K], decoding only the gathered values. ingot's ``packed_rows`` op rather than tensor ops:
    inductor inlines a gather written as tensor ops into each of its consumers, which then each read the row again
    from its values scattered over the panel (see packed_linear.cpp). Needs ingot's native library loaded."""
    return torch.ops.ingot.packed_rows(packed, ids, WeightFormat(fmt).value)


def use_packed_linears(
    module: fx.GraphModule,
    pack: Packer = pack_weights,
    formats: Mapping[str, WeightFormat] | None = None,
    bf16_inputs: bool = False,
) -> dict[str, PackedLinear]:
    """Rewrite the float32 ``aten.linear`` calls whose weights are the module's own into ``ingot.packed_linear``;
    returns each packed tensor's name with the linears it holds (one kernel call each). ``formats`` maps a weight's
    name to the format it is stored in (absent: fp32). With ``bf16_inputs`` (``--activation-dtype bf16``) every
    call on a weight stored in a format other than fp32 rounds its input to bfloat16 and multiplies with
    AVX512-BF16; a weight kept in fp32 keeps float32 inputs (bfloat16 would round its values). Linears that read
    the same input (q/k/v, gate/up) become one call on their weights concatenated, its output split: fewer, wider
    products for the kernel's threads to share; they must share a format. A packed tensor is named after its first
    weight, so every program of a model names it alike. An embedding that shares its weight with a packed linear
    (a tied LM head) gathers its rows from the panels. Needs ingot's native library loaded."""
    formats = formats or {}
    graph = module.graph
    by_input: dict[fx.Node, list[fx.Node]] = defaultdict(list)
    for node in graph.find_nodes(op="call_function", target=torch.ops.aten.linear.default):
        weight, bias = node.args[1], _bias(node)
        constant = [weight] + ([bias] if bias is not None else [])
        if all(arg.op == "get_attr" for arg in constant) and _attr(module, weight).dtype == torch.float32:
            by_input[node.args[0]].append(node)

    # a lone linear's weight tensor -> its packed buffer and format (for a tied embedding)
    packed_by_weight: dict[int, tuple[str, WeightFormat]] = {}
    groups: dict[str, PackedLinear] = {}
    for source, linears in by_input.items():
        weights = [_attr(module, node.args[1]) for node in linears]
        biases = [None if _bias(node) is None else _attr(module, _bias(node)) for node in linears]
        widths = [weight.shape[0] for weight in weights]
        names = [node.args[1].target for node in linears]
        fmt = _shared_format(names, formats)
        name = "packed_" + names[0].replace(".", "_")
        _register_weight(module, name, pack(name, weights, fmt))
        groups[name] = PackedLinear(
            weights=names,
            out_features=widths,
            biases=[None if _bias(node) is None else _bias(node).target for node in linears],
            format=fmt,
        )
        if len(linears) == 1:
            packed_by_weight[id(weights[0])] = name, fmt
        bias_name = None
        if any(bias is not None for bias in biases):
            bias_name = f"{name}_bias"
            filled = [torch.zeros(w) if b is None else b.detach() for b, w in zip(biases, widths)]
            _register_weight(module, bias_name, torch.cat(filled))
        with graph.inserting_before(linears[0]):
            packed = graph.get_attr(name)
            bias = graph.get_attr(bias_name) if bias_name else None
            arguments = (source, packed, sum(widths), bias, fmt.value)
            if bf16_inputs and fmt is not WeightFormat.FP32:  # the op's trailing bf16_inputs; absent: False
                arguments += (True,)
            fused = graph.call_function(torch.ops.ingot.packed_linear.default, arguments)
            parts = [fused]
            if len(linears) > 1:
                ends = list(itertools.accumulate(widths))
                parts = [
                    graph.call_function(torch.ops.aten.slice.Tensor, (fused, -1, end - width, end))
                    for width, end in zip(widths, ends)
                ]
        for node, part in zip(linears, parts):
            node.replace_all_uses_with(part)
            graph.erase_node(node)
    _embed_from_panels(module, packed_by_weight)
    graph.eliminate_dead_code()
    module.delete_all_unused_submodules()
    _delete_unused_attributes(module)
    module.recompile()
    return groups


def _register_weight(module: fx.GraphModule, name: str, tensor: torch.Tensor) -> None:
    """A parameter, not a buffer: AOTInductor clones every buffer a program reads (a buffer may be mutated), which
    would copy each packed weight into every lowering worker's memory."""
    module.register_parameter(name, torch.nn.Parameter(tensor, requires_grad=False))


def _shared_format(weights: list[str], formats: Mapping[str, WeightFormat]) -> WeightFormat:
    """The format of linears packed into one tensor: one for all of them."""
    chosen = {weight: WeightFormat(formats.get(weight, WeightFormat.FP32)) for weight in weights}
    if len(set(chosen.values())) > 1:
        named = ", ".join(f"{weight}: {fmt.value}" for weight, fmt in chosen.items())
        raise CompileError(f"linears of one input are packed into one tensor and need one weight format ({named})")
    return chosen[weights[0]]


def _embed_from_panels(module: fx.GraphModule, packed_by_weight: dict[int, tuple[str, WeightFormat]]) -> None:
    """``embedding(W, ids)`` -> ``embedding_rows(panels, ids)`` where W is a packed linear's weight."""
    graph = module.graph
    for node in graph.find_nodes(op="call_function", target=torch.ops.aten.embedding.default):
        weight, ids = node.args[:2]
        packed = packed_by_weight.get(id(_attr(module, weight))) if weight.op == "get_attr" else None
        if packed is None:
            continue
        name, fmt = packed
        with graph.inserting_before(node):
            rows = graph.call_function(embedding_rows, (graph.get_attr(name), ids, fmt.value))
        node.replace_all_uses_with(rows)
        graph.erase_node(node)


def _delete_unused_attributes(module: fx.GraphModule) -> None:
    """Drop the parameters and buffers no node reads (the unpacked weights): a program's inputs are what it reads."""
    used = {node.target for node in module.graph.find_nodes(op="get_attr")}
    for name in [n for n, _ in itertools.chain(module.named_parameters(), module.named_buffers()) if n not in used]:
        owner, _, attr = name.rpartition(".")
        parent = module.get_submodule(owner) if owner else module
        if attr in parent._parameters:
            del parent._parameters[attr]
        else:
            del parent._buffers[attr]


def _bias(linear: fx.Node) -> fx.Node | None:
    return linear.args[2] if len(linear.args) > 2 else None


def _attr(module: fx.GraphModule, node: fx.Node) -> torch.Tensor:
    return operator.attrgetter(node.target)(module)
