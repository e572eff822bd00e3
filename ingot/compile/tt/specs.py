"""Tenstorrent device specs, in the style of tt-inference-server's model specs, and the static shapes they imply.

A TT program has static shapes only, so the spec fixes what the cpu target leaves dynamic: one program
per prefill bucket and per decode batch size, a block-table width of ``max_context / block_size`` and a
KV cache of ``max_concurrency * blocks_per_sequence + 1`` blocks (block 0 is the padding block).
Imports nothing heavy: the cache key is computed from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ingot.errors import OptionError
from ingot.sizes import ceil_div


@dataclass(frozen=True)
class DeviceSpec:
    """One Tenstorrent target: what a model compiled for it may ask, and how it is compiled."""

    target: str
    device: str
    arch: str
    max_concurrency: int  # largest decode batch a program is compiled for
    max_context: int  # longest sequence, prompt plus output
    prefill_bucket_multiple: int  # prefill buckets are rounded up to a multiple of this (TT tiles are 32x32)
    data_format: str  # what the lowered graph computes in: the captured float32 graph, as captured
    policy: str  # the per-layer number-format policy device accuracy is predicted for (numerics half)
    optimization_level: int  # tt-mlir optimizer level: 0 lowers only; 1-2 also build device kernels (minutes)
    detector_policy: str = "yolov4"  # the format policy a detector's (YOLOv4's) accuracy is predicted for
    max_optimization_level: int = 2
    higher_levels_refused: str | None = None  # why a level above max_optimization_level cannot compile

    def as_dict(self) -> dict:
        return asdict(self)


BLACKHOLE_P150 = DeviceSpec(
    target="p150",
    device="Tenstorrent Blackhole p150 (1 chip)",
    arch="blackhole",
    max_concurrency=32,
    max_context=8192,
    prefill_bucket_multiple=32,
    data_format="float32",
    policy="accuracy",
    optimization_level=0,
)

# Levels 1-2 build device kernels on the host; the plugin's assets carry the firmware toolchain for Blackhole only.
_WORMHOLE_LEVELS = (
    "builds device kernels on the host, and this TT plugin build carries no Wormhole firmware toolchain: "
    "Wormhole compiles at level 0 only (its descriptor is a re-stamped tt-xla one)"
)


def _wormhole(target: str, chips: str) -> DeviceSpec:
    return replace(
        BLACKHOLE_P150,
        target=target,
        device=f"Tenstorrent Wormhole {target} ({chips})",
        arch="wormhole_b0",
        max_optimization_level=0,
        higher_levels_refused=_WORMHOLE_LEVELS,
    )


SPECS = {"p150": BLACKHOLE_P150, "n150": _wormhole("n150", "1 chip"), "n300": _wormhole("n300", "2 chips")}


def device_spec(target: str) -> DeviceSpec:
    """The spec of a TT target."""
    spec = SPECS.get(target)
    if spec is None:
        raise OptionError(f"target {target}: not a Tenstorrent target ({', '.join(SPECS)})")
    return spec


def optimization_level(spec: DeviceSpec, requested: int | None) -> int:
    """The tt-mlir level a compile for ``spec`` uses (the spec's own unless ``requested``); one the target cannot
    compile at is refused saying why."""
    level = spec.optimization_level if requested is None else requested
    if level > spec.max_optimization_level:
        raise OptionError(f"--optimization-level {level} on {spec.target}: {spec.higher_levels_refused}")
    return level


@dataclass(frozen=True)
class ModelShapes:
    """The static program shapes of one model compiled for one device spec."""

    prefill_buckets: list[int]
    decode_batches: list[int]
    blocks_per_sequence: int  # static block-table width
    cache_blocks: int  # static KV-cache block count, the padding block included


def model_shapes(spec: DeviceSpec, options) -> ModelShapes:
    """Apply ``spec`` to the compile options; an option the device spec does not allow is an OptionError."""
    if options.max_batch > spec.max_concurrency:
        raise OptionError(f"--max-batch {options.max_batch} exceeds {spec.target}'s max concurrency {spec.max_concurrency}")
    if options.max_context > spec.max_context:
        raise OptionError(f"--max-context {options.max_context} exceeds {spec.target}'s max context {spec.max_context}")
    multiple = spec.prefill_bucket_multiple
    buckets = sorted({ceil_div(b, multiple) * multiple for b in options.prefill_buckets})
    if buckets[-1] > options.max_context:
        raise OptionError(
            f"prefill bucket {buckets[-1]} (buckets are multiples of {multiple} on {spec.target}) "
            f"exceeds max context {options.max_context}"
        )
    blocks = options.max_blocks_per_sequence
    return ModelShapes(
        prefill_buckets=buckets,
        decode_batches=options.decode_batches,
        blocks_per_sequence=blocks,
        cache_blocks=options.max_batch * blocks + 1,
    )
