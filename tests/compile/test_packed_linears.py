"""The decode programs' pass onto ingot's packed matrix product."""

from __future__ import annotations

import torch

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
