"""Compile options: what a user may choose, validated once, and the shape buckets they imply."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ingot.errors import OptionError

TARGETS = ("cpu", "p150", "n150", "n300")


def _powers_of_two(low: int, high: int) -> list[int]:
    values, value = [], low
    while value < high:
        values.append(value)
        value *= 2
    return values + [high]


class TargetOptions(BaseModel):
    """What every compile chooses: the target and the dtype; parsed from user input into one-line errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = "cpu"
    dtype: str = "float32"
    optimization_level: int | None = None  # Tenstorrent targets: tt-mlir optimizer level (default: the device spec's)
    allow_cpu_fallback: bool = False  # Tenstorrent targets: record ops that did not lower instead of failing

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        if value not in TARGETS:
            raise ValueError(f"unknown target {value!r}; targets: {', '.join(TARGETS)}")
        return value

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        if value != "float32":
            raise ValueError("only float32 is supported on the cpu target")
        return value

    @field_validator("optimization_level")
    @classmethod
    def _optimization_level(cls, value: int | None) -> int | None:
        if value is not None and value not in (0, 1, 2):
            raise ValueError("optimization level must be 0, 1 or 2")
        return value

    @model_validator(mode="after")
    def _tt_only(self) -> Self:
        if self.target == "cpu" and self.optimization_level is not None:
            raise ValueError("--optimization-level applies to Tenstorrent targets (p150), not cpu")
        if self.target == "cpu" and self.allow_cpu_fallback:
            raise ValueError("--allow-cpu-fallback applies to Tenstorrent targets (p150), not cpu")
        return self

    @classmethod
    def parse(cls, **values: object) -> Self:
        """Build from user input; a bad value is an OptionError naming the option."""
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "options"
            message = first["msg"].removeprefix("Value error, ")
            raise OptionError(f"--{where.replace('_', '-')}: {message}" if first["loc"] else message) from error


class CompileOptions(TargetOptions):
    """A language model's compile options."""

    max_batch: int = Field(32, ge=1, le=256)
    max_context: int = Field(2048, ge=64, le=131072)
    block_size: int = 16
    prefill_buckets: tuple[int, ...] = ()  # default: powers of two from 16 up to min(512, max_context)
    shared_weights: bool = False  # cpu: every program reads the one weights file; none carries a frozen copy

    @field_validator("block_size")
    @classmethod
    def _block_size(cls, value: int) -> int:
        if value not in (8, 16, 32, 64, 128):
            raise ValueError("block size must be one of 8, 16, 32, 64, 128")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_buckets(cls, values: dict) -> dict:
        if not values.get("prefill_buckets"):
            max_context = values.get("max_context", cls.model_fields["max_context"].default)
            if isinstance(max_context, int):
                values = {**values, "prefill_buckets": tuple(_powers_of_two(16, min(512, max(max_context, 16))))}
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
        return _powers_of_two(1, self.max_batch) if self.max_batch > 1 else [1]

    @property
    def max_blocks_per_sequence(self) -> int:
        return -(-self.max_context // self.block_size)
