"""A graph pass for decode programs: their matrix products go to ingot's ``packed_linear`` kernel (see
ingot/compile/kernels/packed_linear.cpp) on weights packed here, at compile time, into the program."""

from __future__ import annotations

import itertools
import operator
from collections import defaultdict

import torch
from torch import fx

from ingot.sizes import ceil_div

PACK_WIDTH = 48  # columns per packed panel of the kernel


def pack_linear_weight(weight: torch.Tensor) -> torch.Tensor:
    """[N, K] -> [ceil(N / 48), K, 48]: each panel of 48 output columns with its K inputs contiguous."""
    out_features, in_features = weight.shape
    padded = ceil_div(out_features, PACK_WIDTH) * PACK_WIDTH
    weight = torch.nn.functional.pad(weight.detach(), (0, 0, 0, padded - out_features))
    return weight.reshape(padded // PACK_WIDTH, PACK_WIDTH, in_features).transpose(1, 2).contiguous()


def use_packed_linears(module: fx.GraphModule) -> int:
    """Rewrite the float32 ``aten.linear`` calls whose weights are the module's own into ``ingot.packed_linear``;
    returns how many kernel calls the graph has now. Linears that read the same input (q/k/v, gate/up) become
    one call on their weights concatenated, its output split: fewer, wider products for the kernel's threads to
    share. Needs ingot's native library loaded."""
    graph = module.graph
    by_input: dict[fx.Node, list[fx.Node]] = defaultdict(list)
    for node in graph.find_nodes(op="call_function", target=torch.ops.aten.linear.default):
        weight, bias = node.args[1], _bias(node)
        constant = [weight] + ([bias] if bias is not None else [])
        if all(arg.op == "get_attr" for arg in constant) and _attr(module, weight).dtype == torch.float32:
            by_input[node.args[0]].append(node)

    for index, (source, linears) in enumerate(by_input.items()):
        weights = [_attr(module, node.args[1]) for node in linears]
        biases = [None if _bias(node) is None else _attr(module, _bias(node)) for node in linears]
        widths = [weight.shape[0] for weight in weights]
        name = f"ingot_packed_linear_{index}"
        module.register_buffer(name, pack_linear_weight(torch.cat(weights)))
        bias_name = None
        if any(bias is not None for bias in biases):
            bias_name = f"{name}_bias"
            filled = [torch.zeros(w) if b is None else b.detach() for b, w in zip(biases, widths)]
            module.register_buffer(bias_name, torch.cat(filled))
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
    graph.eliminate_dead_code()
    module.delete_all_unused_submodules()
    module.recompile()
    return len(by_input)


def _bias(linear: fx.Node) -> fx.Node | None:
    return linear.args[2] if len(linear.args) > 2 else None


def _attr(module: fx.GraphModule, node: fx.Node) -> torch.Tensor:
    return operator.attrgetter(node.target)(module)
