"""Compile options: what a user may choose, checked one way (``one_of``, pydantic's bounds) into one-line errors.
``TargetOptions`` is what every compile chooses (target, dtype, the cpu target's vector ISA, Tenstorrent settings);
``CompileOptions`` (a language model) and ``DetectorOptions`` add their own, and the shapes they imply."""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ingot.artifacts.cpu_isa import BF16_PRODUCTS_FLAG, CPU_ISA_CHOICES, has_flag, has_isa, host_isa
from ingot.artifacts.weight_format import WEIGHT_FORMAT_CHOICES
from ingot.compile.tt.weight_dtypes import plugin_weight_dtype
from ingot.errors import OptionError
from ingot.models.yolov4.spec import INPUT_SIZES
from ingot.sizes import ceil_div, powers_of_two

TARGETS = ("cpu", "p150", "n150", "n300")
BLOCK_SIZES = (8, 16, 32, 64, 128)
DEFAULT_BLOCK_SIZE = 16
# Tenstorrent's paged KV-cache ops (ttnn.paged_update_cache / paged_fill_cache) take whole 32-row tiles per block
TT_BLOCK_SIZE_MULTIPLE = 32
EMITS = ("onnx",)
# --kv-cache-dtype (vLLM's flag) -> the dtype of the cache tensor, as the manifest's kv_cache.dtype records it
KV_CACHE_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
# --activation-dtype: the linears' inputs as their products take them (bf16: rounded to bfloat16, as a Tenstorrent
# device holds activations, and multiplied with AVX512-BF16)
ACTIVATION_DTYPES = ("fp32", "bf16")
ONNX_FILE = "model.onnx"  # what --emit onnx adds to a detector's artifact


def check_one_of(value: object, choices: Collection, message: str) -> object:
    """``value`` if it is one of ``choices``; else a ValueError with ``message`` ({value}, {choices} filled in)."""
    if value not in choices:
        raise ValueError(message.format(value=value, choices=", ".join(map(str, choices))))
    return value


def one_of(choices: Collection, message: str) -> AfterValidator:
    """A field's validator (``Annotated[int, one_of(...)]``): the value must be one of ``choices``."""
    return AfterValidator(lambda value: check_one_of(value, choices, message))


KvCacheDtype = Annotated[str, one_of(KV_CACHE_DTYPES, "unknown KV-cache dtype {value!r}; choices: {choices}")]


class TargetOptions(BaseModel):
    """What every compile chooses: the target and the dtype; parsed from user input into one-line errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Annotated[str, one_of(TARGETS, "unknown target {value!r}; targets: {choices}")] = "cpu"
    dtype: Annotated[str, one_of(("float32",), "only float32 is supported on the cpu target")] = "float32"
    # Tenstorrent targets: tt-mlir optimizer level (default: the device spec's)
    optimization_level: Annotated[int | None, one_of((None, 0, 1, 2), "optimization level must be 0, 1 or 2")] = None
    allow_cpu_fallback: bool = False  # Tenstorrent targets: record ops that did not lower instead of failing
    allow_unverified: bool = False  # Tenstorrent targets: record a failed conversion check instead of failing
    # cpu: the vector ISA its native code is compiled for (avx2, avx512); "native" (the default) is resolved here
    # to this CPU's, so the cache key names it. None on a Tenstorrent target.
    cpu_isa: str | None = Field(None, validate_default=True)

    @field_validator("cpu_isa")
    @classmethod
    def _resolve_cpu_isa(cls, value: str | None, info: ValidationInfo) -> str | None:
        target = info.data.get("target")
        if target is None:  # the target itself was refused
            return value
        return resolve_cpu_isa(value, target)

    @model_validator(mode="after")
    def _tt_only(self) -> Self:
        if self.target == "cpu" and self.optimization_level is not None:
            raise ValueError("--optimization-level applies to Tenstorrent targets (p150), not cpu")
        if self.target == "cpu" and self.allow_cpu_fallback:
            raise ValueError("--allow-cpu-fallback applies to Tenstorrent targets (p150), not cpu")
        if self.target == "cpu" and self.allow_unverified:
            raise ValueError("--allow-unverified applies to Tenstorrent targets (p150), not cpu")
        return self

    @property
    def extra_cpu_flags(self) -> tuple[str, ...]:
        """The CPU flags the programs use beyond their ISA's (the manifest's ``cpu.flags`` names them too)."""
        return ()

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
    # default: 16 on cpu, 32 on a Tenstorrent target (its paged cache ops need a multiple of 32)
    block_size: Annotated[int, one_of(BLOCK_SIZES, "block size must be one of {choices}")] = DEFAULT_BLOCK_SIZE
    prefill_buckets: tuple[int, ...] = ()  # default: powers of two from 16 up to min(512, max_context)
    # keys and values as the cache stores them (bf16: half the bytes, so twice the tokens and half attention's reads)
    kv_cache_dtype: KvCacheDtype = "fp32"
    # cpu: the number format each linear's weight is stored in: one for all (fp32, bf16, bfp8, bfp4), or a
    # Tenstorrent policy's per-layer choice (accuracy, performance); see ingot/compile/weight_formats.py.
    # Tenstorrent targets: fp32, or bfp8 / bfp4 for every matmul weight (tt/weight_dtypes.py)
    weight_format: Annotated[
        str, one_of(WEIGHT_FORMAT_CHOICES, "unknown weight format {value!r}; choices: {choices}")
    ] = "fp32"
    # a weight format whose verification misses PCC 0.99 is recorded in the report instead of failing the compile
    allow_low_accuracy: bool = False
    # cpu: the inputs of linears stored in a format other than fp32, as their products take them: float32, or
    # rounded to bfloat16 and multiplied with AVX512-BF16 (packed_linear's bf16_inputs)
    activation_dtype: Annotated[
        str, one_of(ACTIVATION_DTYPES, "unknown activation dtype {value!r}; choices: {choices}")
    ] = "fp32"

    @model_validator(mode="before")
    @classmethod
    def _default_buckets(cls, values: dict) -> dict:
        if not values.get("prefill_buckets"):
            max_context = values.get("max_context", cls.model_fields["max_context"].default)
            if isinstance(max_context, int):
                values = {**values, "prefill_buckets": tuple(powers_of_two(16, min(512, max(max_context, 16))))}
        return values

    @model_validator(mode="before")
    @classmethod
    def _default_block_size(cls, values: dict) -> dict:
        if values.get("block_size") is None and values.get("target", "cpu") != "cpu":
            values = {**values, "block_size": TT_BLOCK_SIZE_MULTIPLE}
        return values

    @model_validator(mode="after")
    def _tt_block_size(self) -> CompileOptions:
        if self.target != "cpu" and self.block_size % TT_BLOCK_SIZE_MULTIPLE:
            raise ValueError(
                f"--block-size {self.block_size} on {self.target}: Tenstorrent's paged KV-cache ops write blocks of a "
                f"multiple of {TT_BLOCK_SIZE_MULTIPLE} tokens"
            )
        return self

    @model_validator(mode="after")
    def _buckets(self) -> CompileOptions:
        buckets = self.prefill_buckets
        if list(buckets) != sorted(set(buckets)) or buckets[0] < 2:
            raise ValueError("prefill buckets must be increasing token counts of at least 2")
        if buckets[-1] > self.max_context:
            raise ValueError(f"prefill bucket {buckets[-1]} exceeds max context {self.max_context}")
        return self

    @model_validator(mode="after")
    def _kv_cache_dtype_on_cpu(self) -> CompileOptions:
        if self.kv_cache_dtype != "fp32" and self.target != "cpu":
            raise ValueError(f"--kv-cache-dtype {self.kv_cache_dtype} applies to the cpu target, not {self.target}")
        return self

    @model_validator(mode="after")
    def _weight_format(self) -> CompileOptions:
        if self.target != "cpu":
            plugin_weight_dtype(self.weight_format, self.target)
            if self.allow_low_accuracy:
                raise ValueError(f"--allow-low-accuracy applies to the cpu target, whose compile runs the weights; "
                                 f"a {self.target} compile runs nothing to verify")
        if self.allow_low_accuracy and self.weight_format == "fp32":
            raise ValueError("--allow-low-accuracy applies to a --weight-format other than fp32 (which must match)")
        return self

    @model_validator(mode="after")
    def _activation_dtype(self) -> CompileOptions:
        if self.activation_dtype == "fp32":
            return self
        option = f"--activation-dtype {self.activation_dtype}"
        if self.target != "cpu":
            raise ValueError(f"{option} applies to the cpu target, not {self.target}")
        if self.weight_format == "fp32":
            raise ValueError(
                f"{option} needs weights bfloat16 holds exactly (--weight-format bf16, bfp8, bfp4, accuracy or "
                "performance): fp32 weights would be rounded"
            )
        if not has_flag(BF16_PRODUCTS_FLAG):
            raise ValueError(f"{option} multiplies with AVX512-BF16: this CPU lacks {BF16_PRODUCTS_FLAG}")
        if self.cpu_isa != "avx512":
            raise ValueError(f"{option} multiplies with AVX512-BF16: it needs --cpu-isa avx512, not {self.cpu_isa}")
        return self

    @property
    def extra_cpu_flags(self) -> tuple[str, ...]:
        return (BF16_PRODUCTS_FLAG,) if self.activation_dtype == "bf16" else ()

    @property
    def decode_batches(self) -> list[int]:
        return powers_of_two(1, self.max_batch)

    @property
    def max_blocks_per_sequence(self) -> int:
        return ceil_div(self.max_context, self.block_size)

    @property
    def kv_cache_torch_dtype(self) -> str:
        """The KV cache's dtype by torch's name (``float32``, ``bfloat16``), as the manifest records it."""
        return KV_CACHE_DTYPES[self.kv_cache_dtype]


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


def resolve_cpu_isa(value: str | None, target: str) -> str | None:
    """The ISA ``--cpu-isa value`` compiles ``target``'s native code for: "native" (or nothing) is this CPU's own. A
    compile runs its programs to verify them, so an ISA this CPU lacks is refused."""
    if target != "cpu":
        if value not in (None, "native"):
            raise ValueError(f"applies to the cpu target, not {target}")
        return None
    check_one_of(value or "native", CPU_ISA_CHOICES, "unknown vector ISA {value!r}; choices: {choices}")
    host = host_isa()
    if host is None:
        raise ValueError("this CPU has neither avx2 nor avx512, which the cpu target's native code needs")
    isa = host if value in (None, "native") else value
    if not has_isa(isa):
        raise ValueError(f"this CPU has {host}, not {isa}: it could not verify the programs (use --cpu-isa {host})")
    return isa
