"""Compile options of a detector: the square input size, the largest batch, and what else to emit."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from ingot.compile.options import TargetOptions, _powers_of_two

INPUT_SIZES = (320, 416, 512, 608, 640)
EMITS = ("onnx",)


class DetectorOptions(TargetOptions):
    input_size: int = 416
    max_batch: int = Field(8, ge=1, le=64)
    emit: tuple[str, ...] = ()

    @field_validator("input_size")
    @classmethod
    def _input_size(cls, value: int) -> int:
        if value not in INPUT_SIZES:
            raise ValueError(f"must be one of {', '.join(map(str, INPUT_SIZES))}")
        return value

    @field_validator("emit")
    @classmethod
    def _emit(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in EMITS]
        if unknown:
            raise ValueError(f"cannot emit {unknown[0]!r}; choices: {', '.join(EMITS)}")
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _onnx_on_cpu(self) -> DetectorOptions:
        if "onnx" in self.emit and self.target != "cpu":
            raise ValueError("--emit onnx applies to the cpu target")
        return self

    @property
    def batch_sizes(self) -> list[int]:
        """The fixed batch sizes a batch of images is padded to: 1, 2, 4, ... max_batch."""
        return _powers_of_two(1, self.max_batch) if self.max_batch > 1 else [1]
