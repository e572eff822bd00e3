"""What every compile chooses (target, dtype, Tenstorrent settings), and the one way an option is checked and
turned into a one-line error. Each kind of model adds its own options (llm/options.py, detector/options.py)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from ingot.errors import OptionError

TARGETS = ("cpu", "p150", "n150", "n300")


def check_one_of(value: object, choices: Collection, message: str) -> object:
    """``value`` if it is one of ``choices``; else a ValueError with ``message`` ({value}, {choices} filled in)."""
    if value not in choices:
        raise ValueError(message.format(value=value, choices=", ".join(map(str, choices))))
    return value


def one_of(choices: Collection, message: str) -> AfterValidator:
    """A field's validator (``Annotated[int, one_of(...)]``): the value must be one of ``choices``."""
    return AfterValidator(lambda value: check_one_of(value, choices, message))


class TargetOptions(BaseModel):
    """What every compile chooses: the target and the dtype; parsed from user input into one-line errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Annotated[str, one_of(TARGETS, "unknown target {value!r}; targets: {choices}")] = "cpu"
    dtype: Annotated[str, one_of(("float32",), "only float32 is supported on the cpu target")] = "float32"
    # Tenstorrent targets: tt-mlir optimizer level (default: the device spec's)
    optimization_level: Annotated[int | None, one_of((None, 0, 1, 2), "optimization level must be 0, 1 or 2")] = None
    allow_cpu_fallback: bool = False  # Tenstorrent targets: record ops that did not lower instead of failing

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
