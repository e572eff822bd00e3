"""A language model's compile options, validated once, and the shape buckets they imply."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from ingot.compile.options import TargetOptions, one_of
from ingot.sizes import ceil_div, powers_of_two

BLOCK_SIZES = (8, 16, 32, 64, 128)


class CompileOptions(TargetOptions):
    """A language model's compile options."""

    max_batch: int = Field(32, ge=1, le=256)
    max_context: int = Field(2048, ge=64, le=131072)
    block_size: Annotated[int, one_of(BLOCK_SIZES, "block size must be one of {choices}")] = 16
    prefill_buckets: tuple[int, ...] = ()  # default: powers of two from 16 up to min(512, max_context)
    shared_weights: bool = False  # cpu: every program reads the one weights file; none carries a frozen copy

    @model_validator(mode="before")
    @classmethod
    def _default_buckets(cls, values: dict) -> dict:
        if not values.get("prefill_buckets"):
            max_context = values.get("max_context", cls.model_fields["max_context"].default)
            if isinstance(max_context, int):
                values = {**values, "prefill_buckets": tuple(powers_of_two(16, min(512, max(max_context, 16))))}
        return values

    @model_validator(mode="after")
    def _buckets(self) -> CompileOptions:
        buckets = self.prefill_buckets
        if list(buckets) != sorted(set(buckets)) or buckets[0] < 2:
            raise ValueError("prefill buckets must be increasing token counts of at least 2")
        if buckets[-1] > self.max_context:
            raise ValueError(f"prefill bucket {buckets[-1]} exceeds max context {self.max_context}")
        return self

    @property
    def decode_batches(self) -> list[int]:
        return powers_of_two(1, self.max_batch)

    @property
    def max_blocks_per_sequence(self) -> int:
        return ceil_div(self.max_context, self.block_size)
