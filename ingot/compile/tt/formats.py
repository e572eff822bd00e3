"""Tenstorrent data formats, emulated in torch: what a float32 tensor becomes after ttnn stores it in a format.

`quantize(x, fmt)` returns float32 values equal, bit for bit, to converting `x` with
`ttnn.Tensor(x, dtype, layout=ttnn.TILE_LAYOUT)` and reading it back (checked against golden vectors made by
ttnn 0.81.1, tools/make_ttnn_golden.py).

- ``bfloat16``: 8 exponent and 7 fraction bits, rounded to nearest, ties to even (ttnn's host conversion
  rounds this way; so does torch's ``.to(torch.bfloat16)``). Subnormals are kept.
- ``bfloat8_b`` / ``bfloat4_b``: block floating point (tt-metal's ``Bfp8_b`` / ``Bfp4_b``). A tile of 32x32 is
  stored as four 16x16 faces; each row of a face, 16 values, shares one 8-bit exponent; each value keeps a
  sign and a 7-bit (bfloat8_b) or 3-bit (bfloat4_b) magnitude whose top bit is explicit. Because tiles and
  faces start at multiples of 16 columns, a block is 16 consecutive values of the last dimension starting at a
  multiple of 16; rows are independent. Shapes that are not whole tiles are padded with zeros, which never
  change a block's exponent, so padding only completes the last block of a row.

Block rules, as tt-metal's host packer (``convert_u32_to_bfp``) and unpacker apply them:

1. The shared exponent is the largest biased float32 exponent field in the block (zeros count as 0).
2. Each value's 24-bit significand (hidden 1 included) is shifted right by (shared - own exponent), dropping
   the shifted-out bits, then rounded to the format's width, to nearest with ties to even on what is left.
   A significand that rounds past the largest code saturates at it (the exponent never grows). Zeros and
   float32 subnormals (exponent field 0) are stored as +0, and so is a value whose magnitude rounds to 0 (the
   sign is dropped): there is no -0.
3. Reading back, code ``m`` with shared exponent ``e`` is ``m * 2**(e - 127 - (width - 1))`` written as a
   normalized float32 (exponent field ``e - shift``, where ``shift`` normalizes ``m``). The unpacker flushes a
   value whose field would be negative to +0; since inputs with exponent field 0 were flushed when packing,
   the field is always at least the value's own exponent, and that case does not arise from packed data.

Infinities and NaNs are outside what this emulates (and what the golden vectors cover).
"""

from __future__ import annotations

from enum import Enum

import torch

from ingot.sizes import ceil_div

BLOCK = 16  # values sharing one exponent: one row of a 16x16 face


class TTFormat(str, Enum):
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    BFLOAT8_B = "bfloat8_b"
    BFLOAT4_B = "bfloat4_b"


# Magnitude bits per value of a block format, the leading (no longer hidden) bit included.
MAGNITUDE_BITS = {TTFormat.BFLOAT8_B: 7, TTFormat.BFLOAT4_B: 3}

_CHUNK = 1 << 21  # values quantized at a time


def parse_format(value: str | TTFormat) -> TTFormat:
    try:
        return TTFormat(value)
    except ValueError:
        names = ", ".join(f.value for f in TTFormat)
        raise ValueError(f"unknown TT data format {value!r}: one of {names}") from None


def quantize(x: torch.Tensor, fmt: str | TTFormat) -> torch.Tensor:
    """x as ttnn stores it in `fmt`, read back as float32 (same shape). Gradients are not tracked."""
    fmt = parse_format(fmt)
    x = x.detach().to(torch.float32)
    if fmt is TTFormat.FLOAT32:
        return x.clone()
    if fmt is TTFormat.BFLOAT16:
        return x.to(torch.bfloat16).to(torch.float32)
    width = x.shape[-1] if x.dim() else 1
    rows = x.reshape(-1, width)
    step = max(1, _CHUNK // width)  # bounded temporaries for big weights (an LM head is ~30M values)
    parts = [_quantize_block(rows[i : i + step], MAGNITUDE_BITS[fmt]) for i in range(0, rows.shape[0], step)]
    return torch.cat(parts).reshape(x.shape) if parts else x.clone()


def _as_bits(x: torch.Tensor) -> torch.Tensor:
    """float32 -> its IEEE bits as int32 (the sign bit makes negative numbers negative; masks undo that)."""
    return x.contiguous().view(torch.int32)


def _blocks(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], int]:
    """Rows of the last dimension, zero-padded to whole blocks, as [rows, blocks, 16]."""
    shape = tuple(x.shape)
    width = shape[-1] if shape else 1
    rows = x.reshape(-1, width)
    padded = ceil_div(width, BLOCK) * BLOCK
    if padded != width:
        rows = torch.nn.functional.pad(rows, (0, padded - width))
    return rows.reshape(rows.shape[0], padded // BLOCK, BLOCK), shape, width


def _quantize_block(x: torch.Tensor, width: int) -> torch.Tensor:
    blocks, shape, columns = _blocks(x)
    bits = _as_bits(blocks)
    negative = bits < 0
    exponent = (bits >> 23) & 0xFF
    significand = (bits & 0x7FFFFF) | (1 << 23)

    shared = exponent.amax(dim=-1, keepdim=True)
    significand = significand >> (shared - exponent).clamp(max=31)  # dropped bits are gone before rounding

    drop = 24 - width
    rest = significand & ((1 << drop) - 1)
    code = significand >> drop
    tie = 1 << (drop - 1)
    round_up = (rest > tie) | ((rest == tie) & ((code & 1) == 1))
    code = (code + round_up.to(code.dtype)).clamp(max=(1 << width) - 1)
    code = torch.where(exponent == 0, 0, code)  # zeros, and float32 subnormals: flushed to zero

    # Read back: normalize the code so its leading 1 becomes the hidden bit (code >= 1 is exact in float32).
    leading = torch.frexp(code.clamp(min=1).to(torch.float32)).exponent.to(torch.int32) - 1
    shift = (width - 1) - leading
    field = shared - shift
    fraction = ((code << (shift + 1)) & ((1 << width) - 1)) << (23 - width)
    magnitude = ((field.clamp(min=0) << 23) | fraction).view(torch.float32)
    values = torch.where(negative, -magnitude, magnitude)
    values = torch.where((code == 0) | (field < 0), 0.0, values)  # +0: a zero code drops its sign

    values = values.reshape(blocks.shape[0], -1)[:, :columns]
    return values.reshape(shape)

