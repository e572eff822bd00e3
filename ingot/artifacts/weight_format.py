"""The number formats a cpu artifact stores a linear's weight in: float32, or one of Tenstorrent's (bfloat16,
bfloat8_b, bfloat4_b), holding the same bits a Tenstorrent device would (ingot/compile/tt/formats.py)."""

from __future__ import annotations

from enum import Enum


class WeightFormat(str, Enum):
    FP32 = "fp32"
    BF16 = "bf16"
    BFP8 = "bfp8"  # Tenstorrent bfloat8_b: 16 values share an 8-bit exponent, each a sign and 7 magnitude bits
    BFP4 = "bfp4"  # Tenstorrent bfloat4_b: the same with 3 magnitude bits

    @property
    def bytes_per_value(self) -> float:
        """Stored bytes per weight value, a block's shared exponent included."""
        return {"fp32": 4.0, "bf16": 2.0, "bfp8": 17 / 16, "bfp4": 9 / 16}[self.value]


# `ingot compile --weight-format`: one format for every linear, or a Tenstorrent policy by name
# (ingot/compile/tt/policies.py), which picks one per linear.
WEIGHT_FORMAT_POLICIES = ("accuracy", "performance")
WEIGHT_FORMAT_CHOICES = (*(f.value for f in WeightFormat), *WEIGHT_FORMAT_POLICIES)
