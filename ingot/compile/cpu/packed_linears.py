"""A graph pass for language-model programs: their matrix products go to ingot's ``packed_linear`` kernel (see
ingot/compile/kernels/packed_linear.cpp) on weights packed into its panels, and a tied embedding reads its rows
from the LM head's panels. Every program of an artifact runs the same pass, so they all name the same packed
tensors: the weights file holds one copy, in the layout the kernel reads."""

from __future__ import annotations

import itertools
import operator
from collections import defaultdict
from collections.abc import Callable

import torch
from torch import fx

from ingot.artifacts.manifest import PackedLinear
from ingot.sizes import ceil_div

PACK_WIDTH = 48  # columns per packed panel of the kernel

# How the pass gets a packed weight: from the weights concatenated (the build packs them once, for the weights
# file) or as an empty stand-in of the packed shape (a lowering only needs shapes: the weights are inputs).
Packer = Callable[[str, list[torch.Tensor]], torch.Tensor]


def packed_shape(out_features: int, in_features: int) -> tuple[int, int, int]:
    return ceil_div(out_features, PACK_WIDTH), in_features, PACK_WIDTH


def pack_linear_weight(weight: torch.Tensor) -> torch.Tensor:
    """[N, K] -> [ceil(N / 48), K, 48]: each panel of 48 output columns with its K inputs contiguous."""
    out_features, in_features = weight.shape
    panels = packed_shape(out_features, in_features)[0]
    weight = torch.nn.functional.pad(weight.detach(), (0, 0, 0, panels * PACK_WIDTH - out_features))
    return weight.reshape(panels, PACK_WIDTH, in_features).transpose(1, 2).contiguous()


def pack_weights(_: str, weights: list[torch.Tensor]) -> torch.Tensor:
    """The ``Packer`` for real weights."""
    return pack_linear_weight(torch.cat(weights) if len(weights) > 1 else weights[0])


def empty_packed(_: str, weights: list[torch.Tensor]) -> torch.Tensor:
    """The ``Packer`` for a lowering: uninitialised memory (never touched, so it costs no resident memory)."""
    return torch.empty(packed_shape(sum(w.shape[0] for w in weights), weights[0].shape[1]), dtype=weights[0].dtype)


def unpack_linear_weight(packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """The inverse of ``pack_linear_weight``: [ceil(N / 48), K, 48] -> [N, K]."""
    panels, in_features, _ = packed.shape
    return packed.transpose(1, 2).reshape(panels * PACK_WIDTH, in_features)[:out_features]


def use_packed_linears(module: fx.GraphModule, pack: Packer = pack_weights) -> dict[str, PackedLinear]:
    """Rewrite the float32 ``aten.linear`` calls whose weights are the module's own into ``ingot.packed_linear``;
    returns each packed tensor's name with the linears it holds (one kernel call each). Linears that read the same input (q/k/v, gate/up) become
    one call on their weights concatenated, its output split: fewer, wider products for the kernel's threads to
    share. A packed tensor is named after its first weight, so every program of a model names it alike. An
    embedding that shares its weight with a packed linear (a tied LM head) gathers its rows from the panels.
    Needs ingot's native library loaded."""
    graph = module.graph
    by_input: dict[fx.Node, list[fx.Node]] = defaultdict(list)
    for node in graph.find_nodes(op="call_function", target=torch.ops.aten.linear.default):
        weight, bias = node.args[1], _bias(node)
        constant = [weight] + ([bias] if bias is not None else [])
        if all(arg.op == "get_attr" for arg in constant) and _attr(module, weight).dtype == torch.float32:
            by_input[node.args[0]].append(node)

    packed_by_weight: dict[int, str] = {}  # a lone linear's weight tensor -> its packed buffer (for a tied embedding)
    groups: dict[str, PackedLinear] = {}
    for source, linears in by_input.items():
        weights = [_attr(module, node.args[1]) for node in linears]
        biases = [None if _bias(node) is None else _attr(module, _bias(node)) for node in linears]
        widths = [weight.shape[0] for weight in weights]
        name = "packed_" + linears[0].args[1].target.replace(".", "_")
        _register_weight(module, name, pack(name, weights))
        groups[name] = PackedLinear(
            weights=[node.args[1].target for node in linears],
            out_features=widths,
            biases=[None if _bias(node) is None else _bias(node).target for node in linears],
        )
        if len(linears) == 1:
            packed_by_weight[id(weights[0])] = name
        bias_name = None
        if any(bias is not None for bias in biases):
            bias_name = f"{name}_bias"
            filled = [torch.zeros(w) if b is None else b.detach() for b, w in zip(biases, widths)]
            _register_weight(module, bias_name, torch.cat(filled))
        with graph.inserting_before(linears[0]):
            packed = graph.get_attr(name)
            bias = graph.get_attr(bias_name) if bias_name else None
            fused = graph.call_function(torch.ops.ingot.packed_linear.default, (source, packed, sum(widths), bias))
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


def _embed_from_panels(module: fx.GraphModule, packed_by_weight: dict[int, str]) -> None:
    """``embedding(W, ids)`` -> ``panels[ids // 48, :, ids % 48]`` where W is a packed linear's weight."""
    graph = module.graph
    for node in graph.find_nodes(op="call_function", target=torch.ops.aten.embedding.default):
        weight, ids = node.args[:2]
        name = packed_by_weight.get(id(_attr(module, weight))) if weight.op == "get_attr" else None
        if name is None:
            continue
        with graph.inserting_before(node):
            panels = graph.get_attr(name)
            panel = graph.call_function(torch.ops.aten.div.Tensor_mode, (ids, PACK_WIDTH), {"rounding_mode": "floor"})
            column = graph.call_function(torch.ops.aten.remainder.Scalar, (ids, PACK_WIDTH))
            rows = graph.call_function(torch.ops.aten.index.Tensor, (panels, [panel, None, column]))
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
