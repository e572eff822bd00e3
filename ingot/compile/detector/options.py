"""Compile options of a detector: the square input size, the largest batch, and what else to emit."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from ingot.compile.options import TargetOptions, check_one_of, one_of
from ingot.models.yolov4.spec import INPUT_SIZES
from ingot.sizes import powers_of_two

EMITS = ("onnx",)


class DetectorOptions(TargetOptions):
    input_size: Annotated[int, one_of(INPUT_SIZES, "must be one of {choices}")] = 416
    max_batch: int = Field(8, ge=1, le=64)
    emit: tuple[str, ...] = ()

    @field_validator("emit")
    @classmethod
    def _emit(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            check_one_of(item, EMITS, "cannot emit {value!r}; choices: {choices}")
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _onnx_on_cpu(self) -> DetectorOptions:
        if "onnx" in self.emit and self.target != "cpu":
            raise ValueError("--emit onnx applies to the cpu target")
        return self

    @property
    def batch_sizes(self) -> list[int]:
        """The fixed batch sizes a batch of images is padded to: 1, 2, 4, ... max_batch."""
        return powers_of_two(1, self.max_batch)
