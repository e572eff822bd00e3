"""packed_linear with bfloat16 inputs (AVX512-BF16): each output is the pairwise sum vdpbf16ps defines, of the
inputs rounded to bfloat16 times exactly the decoded weights, bit for bit, and a row gets the same bits in any
batch. On a CPU without AVX512-BF16 the op refuses, and so do these tests' subject: they are skipped there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ingot.artifacts.cpu_isa import host_flags
from ingot.artifacts.weight_format import WeightFormat
from ingot.compile.cpu.packed_linears import pack_linear_weight, unpack_linear_weight
from ingot.compile.kernels import build_kernels

TT_FORMATS = [fmt for fmt in WeightFormat if fmt is not WeightFormat.FP32]
pytestmark = pytest.mark.skipif("avx512_bf16" not in host_flags(), reason="this CPU lacks AVX512-BF16")


@pytest.fixture(scope="module")
def library() -> Path:
    return build_kernels("avx512")


def pairwise_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Intel's definition of vdpbf16ps, in float32: per pair of k, the odd k's product added, then the even k's,
    each rounded once (a bfloat16 product is exact in float32), the bias added last."""
    x = x.bfloat16().float()
    out = torch.zeros(x.shape[0], weight.shape[0])
    for k in range(0, x.shape[1], 2):
        if k + 1 < x.shape[1]:
            out = out + x[:, k + 1, None] * weight[None, :, k + 1]
        out = out + x[:, k, None] * weight[None, :, k]
    return out if bias is None else out + bias


def _case(fmt: WeightFormat, rows: int, out_features: int, in_features: int, seed: int) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator)
    packed = pack_linear_weight(weight, fmt)
    decoded = unpack_linear_weight(packed, out_features, fmt)
    x = torch.randn(rows, in_features, generator=generator)
    return packed, decoded, x, torch.randn(out_features, generator=generator)


@pytest.mark.parametrize("fmt", TT_FORMATS)
@pytest.mark.parametrize("out_features, in_features", [(100, 77), (150, 600)])  # an odd k; three chunks of k
def test_bf16_inputs_give_the_pairwise_sum_of_bfloat16_products(library, fmt, out_features, in_features):
    """At decode's row counts (pairs decoded in registers) and prefill's (a chunk decoded once per row block)."""
    for rows in (1, 5, 8, 9, 33, 200):
        packed, decoded, x, bias = _case(fmt, rows, out_features, in_features, seed=rows)
        for b in (bias, None):
            out = torch.ops.ingot.packed_linear(x, packed, out_features, b, fmt.value, True)
            assert torch.equal(out, pairwise_reference(x, decoded, b)), (rows, b is None)


@pytest.mark.parametrize("fmt", TT_FORMATS)
def test_bf16_inputs_give_a_row_the_same_bits_in_any_batch(library, fmt):
    packed, _, x, bias = _case(fmt, 200, 150, 600, seed=0)
    alone = torch.cat([torch.ops.ingot.packed_linear(row[None], packed, 150, bias, fmt.value, True) for row in x])
    for rows in (*range(2, 33), 200):
        assert torch.equal(torch.ops.ingot.packed_linear(x[:rows], packed, 150, bias, fmt.value, True), alone[:rows])


def test_bf16_inputs_are_refused_with_float32_weights(library):
    packed = pack_linear_weight(torch.randn(48, 16), WeightFormat.FP32)
    with pytest.raises(RuntimeError, match="bf16_inputs needs a weight format bfloat16 holds exactly"):
        torch.ops.ingot.packed_linear(torch.randn(2, 16), packed, 48, None, "fp32", True)
