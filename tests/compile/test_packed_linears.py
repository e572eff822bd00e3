"""The decode programs' pass onto ingot's packed matrix product."""

from __future__ import annotations

import pytest
import torch

from ingot.artifacts.cpu_isa import BF16_PRODUCTS_FLAG, has_flag
from ingot.artifacts.weight_format import WeightFormat
from ingot.compile.cpu.packed_linears import use_packed_linears
from ingot.compile.kernels import build_kernels


class Block(torch.nn.Module):
    """Three projections of one input (one with a bias, as Qwen2's q/k/v have), then one of their sum."""

    def __init__(self) -> None:
        super().__init__()
        self.q = torch.nn.Linear(24, 32, bias=True)
        self.k = torch.nn.Linear(24, 8, bias=False)
        self.v = torch.nn.Linear(24, 8, bias=False)
        self.out = torch.nn.Linear(8, 20, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        return self.out(k * v + q[..., :8])


def test_projections_of_one_input_become_one_packed_product():
    build_kernels()
    torch.manual_seed(0)
    block = Block().eval()
    x = torch.randn(5, 1, 24)
    module = torch.export.export(block, (x,)).module()

    assert len(use_packed_linears(module)) == 2  # q/k/v as one product, out as another
    targets = [node.target for node in module.graph.nodes if node.op == "call_function"]
    assert torch.ops.aten.linear.default not in targets
    with torch.no_grad():
        torch.testing.assert_close(module(x), block(x), atol=1e-5, rtol=1e-5)


def _packed_calls(module: torch.fx.GraphModule) -> dict[str, tuple]:
    """Each packed_linear call's packed weight -> its arguments after the format (bf16_inputs when given)."""
    calls = module.graph.find_nodes(op="call_function", target=torch.ops.ingot.packed_linear.default)
    return {node.args[1].target: node.args[5:] for node in calls}


def test_bf16_inputs_reach_every_product_on_weights_not_stored_in_fp32():
    """--activation-dtype bf16: a weight stored in bfp8 (or bf16, bfp4) has its product round the input to bfloat16;
    one kept in fp32 (a policy may keep one) keeps float32 inputs, which bfloat16 products would round."""
    build_kernels()
    x = torch.randn(5, 1, 24)
    formats = {"q.weight": WeightFormat.BFP8, "k.weight": WeightFormat.BFP8, "v.weight": WeightFormat.BFP8}
    for bf16_inputs, expected in ((True, (True,)), (False, ())):
        module = torch.export.export(Block().eval(), (x,)).module()
        use_packed_linears(module, formats=formats, bf16_inputs=bf16_inputs)
        assert _packed_calls(module) == {"packed_q_weight": expected, "packed_out_weight": ()}


@pytest.mark.skipif(not has_flag(BF16_PRODUCTS_FLAG), reason="bfloat16 products need AVX512-BF16 (avx512_bf16)")
def test_bf16_inputs_are_rounded_to_bfloat16_before_their_products():
    """Products of bfloat16 values are exact in float32, so the kernel computes the float32 linear of the rounded
    inputs on the stored (decoded) weights, to the summation order's last bits."""
    build_kernels()
    torch.manual_seed(0)
    block = Block().eval()
    x = torch.randn(5, 1, 24)
    formats = {"q.weight": WeightFormat.BF16, "k.weight": WeightFormat.BF16, "v.weight": WeightFormat.BF16}
    module = torch.export.export(block, (x,)).module()
    use_packed_linears(module, formats=formats, bf16_inputs=True)
    with torch.no_grad():
        for linear in (block.q, block.k, block.v):  # the stored weights (the bias stays float32)
            linear.weight.copy_(linear.weight.to(torch.bfloat16).float())
        rounded = x.to(torch.bfloat16).float()
        q, k, v = block.q(rounded), block.k(rounded), block.v(rounded)
        expected = block.out(k * v + q[..., :8])  # out's weight is fp32: its input is not rounded
        torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(module(x), block(x), atol=1e-5, rtol=1e-5)  # the rounding shows
