"""The TT data-format emulation: bit for bit against real ttnn conversions, and the properties users rely on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ingot.compile.tt.formats import BLOCK, MAGNITUDE_BITS, TTFormat, parse_format, quantize
from ingot.sizes import ceil_div

GOLDEN = np.load(Path(__file__).parent / "data" / "ttnn_golden.npz")
CASES = sorted({name.split("/")[0] for name in GOLDEN.files if "/" in name})
FORMATS = ["bfloat16", "bfloat8_b", "bfloat4_b"]
BLOCK_FORMATS = ["bfloat8_b", "bfloat4_b"]


def shared_exponents(x: torch.Tensor) -> torch.Tensor:
    """The biased 8-bit exponent each 16-value block of `x` shares in a block format (the largest exponent field of
    its values): [rows, blocks]."""
    rows = x.detach().to(torch.float32).reshape(-1, x.shape[-1])
    padded = torch.nn.functional.pad(rows, (0, ceil_div(rows.shape[1], BLOCK) * BLOCK - rows.shape[1]))
    fields = (padded.contiguous().view(torch.int32) >> 23) & 0xFF
    return fields.reshape(rows.shape[0], -1, BLOCK).amax(dim=-1)


def test_golden_vectors_cover_the_cases_we_rely_on():
    assert str(GOLDEN["ttnn_version"]) == "0.81.1"
    for case in ("normal", "wide_range", "zeros", "tiny", "negative", "ties", "saturating", "shape_33x47"):
        assert case in CASES
    assert any(GOLDEN[f"{c}/input"].ndim != 2 or GOLDEN[f"{c}/input"].shape[-1] % 32 for c in CASES)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_bit_exact_with_ttnn(case, fmt):
    data = GOLDEN[f"{case}/input"]
    expected = GOLDEN[f"{case}/{fmt}"]
    actual = quantize(torch.from_numpy(data), fmt).numpy()
    assert actual.shape == expected.shape
    mismatched = actual.view(np.uint32) != expected.view(np.uint32)
    assert not mismatched.any(), (
        f"{mismatched.sum()} of {mismatched.size} values differ; first at {np.argwhere(mismatched)[0]}"
    )


@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
def test_every_block_of_16_shares_one_exponent(fmt):
    x = torch.randn(8, 70) * torch.logspace(-3, 3, 70)
    q = quantize(x, fmt)
    width = MAGNITUDE_BITS[TTFormat(fmt)]
    shared = shared_exponents(x)  # [rows, blocks]
    for row in range(x.shape[0]):
        for block in range(shared.shape[1]):
            values = q[row, block * BLOCK : (block + 1) * BLOCK]
            step = 2.0 ** (int(shared[row, block]) - 127 - (width - 1))
            codes = values / step
            assert torch.equal(codes, codes.round()), "every value is an integer multiple of the block's step"
            assert codes.abs().max() <= (1 << width) - 1


def test_blocks_are_16_consecutive_values_of_the_last_dimension():
    x = torch.ones(2, 64) * 0.001
    x[0, 5] = 1000.0  # swamps block 0 of row 0 only
    q = quantize(x, TTFormat.BFLOAT4_B)
    assert torch.equal(q[0, :16] == 0, torch.arange(16) != 5)  # flushed by the shared exponent
    assert torch.equal(q[0, 16:], q[1, 16:])  # the rest of the row and the next row are untouched
    assert (q[1] != 0).all()


@pytest.mark.parametrize("fmt", FORMATS)
def test_idempotent(fmt):
    x = torch.randn(33, 100) * 10
    once = quantize(x, fmt)
    assert torch.equal(quantize(once, fmt), once)


@pytest.mark.parametrize("fmt", FORMATS)
def test_zeros_and_sign(fmt):
    x = torch.randn(4, 48)
    x[:, ::3] = 0.0
    q = quantize(x, fmt)
    assert (q[:, ::3] == 0).all()
    assert torch.equal(quantize(-x, fmt), -q)  # symmetric: rounding never depends on the sign
    nonzero = q != 0
    assert torch.equal(torch.sign(q[nonzero]), torch.sign(x[nonzero]))
    negative_zero = quantize(torch.full((1, 16), -0.0), fmt)
    # bfloat16 keeps -0.0; the block formats have no negative zero
    assert torch.signbit(negative_zero).all() == (fmt == "bfloat16")


@pytest.mark.parametrize("fmt", FORMATS)
def test_shape_and_dtype_kept(fmt):
    for shape in [(), (7,), (3, 5), (2, 3, 40), (1, 1, 32, 32)]:
        x = torch.randn(shape, dtype=torch.float64)
        q = quantize(x, fmt)
        assert q.shape == x.shape and q.dtype == torch.float32


def test_error_ordering_and_float32_is_identity():
    x = torch.randn(64, 256)
    assert torch.equal(quantize(x, "float32"), x)
    errors = [float((quantize(x, f) - x).pow(2).mean()) for f in FORMATS]
    assert errors[0] < errors[1] < errors[2]


def test_unknown_format():
    with pytest.raises(ValueError, match="bfloat8_b"):
        parse_format("bfp8")
