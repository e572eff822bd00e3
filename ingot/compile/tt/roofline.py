"""Model specs per Tenstorrent device: a roofline lower bound on each of a TT artifact's programs, the TTFT and
tokens/s/user it implies, and whether the weights and a full KV cache fit the device's DRAM.

A program's time on a device is at least the sum over its ops of ``max(matmul FLOPs / peak FLOP rate at the op's
math fidelity, DRAM bytes / DRAM bandwidth)`` (ops run one after another; ingot.compile.tt.ttnn_cost counts FLOPs
and bytes low wherever it must guess). Element-wise and other vector work is bounded by its bytes only. Nothing here
is measured: no device is involved, and the programs are the artifact's as lowered (level 0: every tensor in DRAM,
nothing fused beyond what tt-mlir fused), so a device would be slower, never faster, running them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ingot.compile.tt.published_targets import PublishedTarget, published_targets
from ingot.compile.tt.specs import device_spec
from ingot.compile.tt.ttnn_cost import OpCost, element_bytes, main_arguments, mesh_chips, op_costs
from ingot.errors import OptionError


@dataclass(frozen=True)
class DevicePeaks:
    """One board's peak figures, per chip."""

    target: str
    arch: str
    chips: int
    worker_cores: int  # per chip
    dram_gb_s: float  # per chip
    dram_gb: float  # per chip, decimal GB as Tenstorrent states it
    tflops_per_core: dict[str, float]  # math fidelity (hifi4, hifi2, lofi) -> TFLOP/s of one worker core

    def matmul_flops_per_second(self, fidelity: str | None, chips: int) -> float:
        """A fidelity the table lacks (hifi3) gets the next faster rate, none at all the fastest: a lower bound."""
        table = self.tflops_per_core
        rate = table.get(fidelity or "lofi") or (table["hifi2"] if fidelity == "hifi3" else table["lofi"])
        return rate * 1e12 * self.worker_cores * chips


# Matmul rates and DRAM bandwidth: tenstorrent/tt-perf-report, src/tt_perf_report/perf_report.py, class
# ArchitectureSpec (commit 00b7324a30653d406b08efc82e618f30be03e948, Apache-2.0). Wormhole: 64 worker cores (N150 and
# N300 with ethernet dispatch), 288 GB/s, and 74, 148 and 262 TFLOP/s over 72 cores at HiFi4, HiFi2 and LoFi (the
# Wormhole one-pager's FP16, BFP8 and FP8 figures). Blackhole: 512 GB/s (P150) and one core's 4,096 FLOPs a clock at
# 1.35 GHz at LoFi, half at HiFi2, a quarter at HiFi4. tt-perf-report registers 130 worker cores for a P150; the p150
# system descriptor ingot compiles against has a 10x11 worker grid, and its programs are built for those 110 cores.
# DRAM per chip: docs.tenstorrent.com, Wormhole specifications (n150 12 GB GDDR6 at 288 GB/s; n300 24 GB, 12 per
# ASIC, 576 GB/s) and the Blackhole cards' overview (32 GB of GDDR6), taken as decimal GB: a little under the
# parts' binary size, so a model that fits here fits there.
_WORMHOLE_TFLOPS = {"hifi4": 74 / 72, "hifi2": 148 / 72, "lofi": 262 / 72}
_BLACKHOLE_LOFI = 4096 * 1.35e9 / 1e12
_BLACKHOLE_TFLOPS = {"hifi4": _BLACKHOLE_LOFI / 4, "hifi2": _BLACKHOLE_LOFI / 2, "lofi": _BLACKHOLE_LOFI}

PEAKS = {
    "p150": DevicePeaks("p150", "blackhole", 1, 110, 512.0, 32.0, _BLACKHOLE_TFLOPS),
    "n150": DevicePeaks("n150", "wormhole_b0", 1, 64, 288.0, 12.0, _WORMHOLE_TFLOPS),
    "n300": DevicePeaks("n300", "wormhole_b0", 2, 64, 288.0, 12.0, _WORMHOLE_TFLOPS),
}

# The KV cache's element type as a manifest names it -> as TTNN MLIR does
_KV_DTYPES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "bfloat8_b": "bfp_bf8", "bfloat4_b": "bfp_bf4"}


@dataclass(frozen=True)
class ProgramRoofline:
    """One program's cost and its lower-bound time on one device."""

    name: str
    kind: str
    batch: int
    tokens: int | None
    ops: int
    matmul_flops: int
    vector_flops: int
    dram_bytes: int
    chips: int  # the chips it runs on (its mesh, at most the board's)
    compute_seconds: float  # its matmul FLOPs at the peak rate
    memory_seconds: float  # its bytes at the peak bandwidth
    seconds: float  # sum over ops of the larger of the two: the lower bound


@dataclass(frozen=True)
class MemoryFit:
    """The weights and a KV cache for the device's max concurrency and context against its DRAM."""

    weight_bytes: int  # as the programs take them on the device
    kv_bytes_per_token: int  # 0 for a detector
    concurrency: int
    context: int
    dram_bytes: int  # of the chips the programs run on

    @property
    def kv_bytes(self) -> int:
        return self.kv_bytes_per_token * self.concurrency * self.context

    @property
    def fits(self) -> bool:
        return self.weight_bytes + self.kv_bytes <= self.dram_bytes

    @property
    def kv_tokens_that_fit(self) -> int | None:
        """How many tokens of KV cache fit beside the weights (over all users); None for a detector."""
        if not self.kv_bytes_per_token:
            return None
        return max(0, self.dram_bytes - self.weight_bytes) // self.kv_bytes_per_token


@dataclass(frozen=True)
class DeviceReport:
    """A TT artifact on one device: what `ingot inspect --device` prints."""

    peaks: DevicePeaks
    kind: str  # llm or detector
    programs: list[ProgramRoofline]
    memory: MemoryFit
    targets: list[PublishedTarget]

    def ttft_seconds(self) -> dict[int, float]:
        """Prompt bucket (tokens) -> lower bound on the time to the first token: its prefill program's time."""
        return {p.tokens: p.seconds for p in self.programs if p.kind == "prefill" and p.tokens}

    def tokens_per_second_per_user(self) -> dict[int, float]:
        """Decode batch -> upper bound on each user's tokens a second: one token a step."""
        return {p.batch: 1 / p.seconds for p in self.programs if p.kind == "decode" and p.seconds > 0}

    def images_per_second(self) -> dict[int, float]:
        """Detector batch -> upper bound on images a second."""
        return {p.batch: p.batch / p.seconds for p in self.programs if p.kind == "detect" and p.seconds > 0}


def device_peaks(target: str) -> DevicePeaks:
    """The peaks of a Tenstorrent device; another name is an OptionError (a one-line CLI error)."""
    if target not in PEAKS:
        raise OptionError(f"--device {target}: not a Tenstorrent device ({', '.join(PEAKS)})")
    return PEAKS[target]


def program_roofline(
    name: str, kind: str, batch: int, tokens: int | None, ttnn_mlir: str, peaks: DevicePeaks
) -> ProgramRoofline:
    """The lower-bound time of one program (its TTNN MLIR text) on a device."""
    costs = op_costs(ttnn_mlir)
    chips = min(mesh_chips(ttnn_mlir), peaks.chips)
    bandwidth = peaks.dram_gb_s * 1e9 * chips

    def compute(op: OpCost) -> float:
        return op.matmul_flops / peaks.matmul_flops_per_second(op.math_fidelity, chips)

    return ProgramRoofline(
        name=name, kind=kind, batch=batch, tokens=tokens, ops=len(costs),
        matmul_flops=sum(op.matmul_flops for op in costs), vector_flops=sum(op.vector_flops for op in costs),
        dram_bytes=sum(op.dram_bytes for op in costs), chips=chips,
        compute_seconds=sum(compute(op) for op in costs),
        memory_seconds=sum(op.dram_bytes for op in costs) / bandwidth,
        seconds=sum(max(compute(op), op.dram_bytes / bandwidth) for op in costs),
    )  # fmt: skip


def kv_bytes_per_token(manifest) -> int:
    """Keys and values of every layer for one token, in the cache's element type."""
    kv = manifest.kv_cache
    element = element_bytes(_KV_DTYPES.get(kv.dtype, kv.dtype))
    return round(2 * kv.num_layers * kv.num_kv_heads * kv.head_dim * element)


def device_report(artifact_dir: Path, manifest, target: str) -> DeviceReport:
    """The model specs of a TT artifact's programs on ``target`` (p150, n150, n300), from their TTNN MLIR."""
    peaks = device_peaks(target)
    spec = device_spec(target)
    programs, weight_bytes = [], 0
    for p in manifest.programs:
        mlir = [d for d in (p.tt.dumps if p.tt else []) if d.endswith(".ttnn.mlir")]
        if not mlir:
            continue
        text = (artifact_dir / mlir[0]).read_text()
        tokens = p.tokens[0] if p.tokens else None
        programs.append(program_roofline(p.name, p.kind, p.batch[0], tokens, text, peaks))
        arguments = main_arguments(text)
        weights = arguments[: len(arguments) - len(p.tt.inputs)]  # the step's own inputs come last
        weight_bytes = max(weight_bytes, sum(t.nbytes for t in weights))
    if not programs:
        raise OptionError(f"{manifest.key}: no TTNN programs to model (--device needs a Tenstorrent artifact)")
    chips = max(p.chips for p in programs)
    llm = manifest.kind == "llm"
    memory = MemoryFit(
        weight_bytes=weight_bytes,
        kv_bytes_per_token=kv_bytes_per_token(manifest) if llm else 0,
        concurrency=spec.max_concurrency if llm else 0,
        context=spec.max_context if llm else 0,
        dram_bytes=round(peaks.dram_gb * 1e9) * chips,
    )
    return DeviceReport(peaks, manifest.kind, programs, memory, published_targets(target, manifest.kind))
