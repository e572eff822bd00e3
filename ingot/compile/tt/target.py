"""A Tenstorrent device as a compile target: static-shape plans, lowered by plugin workers (tt/lowering.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.export import ExportedProgram

from ingot.artifacts.manifest import TensorSpec, TtProgramInfo, TtTargetInfo
from ingot.artifacts.weight_format import WeightFormat
from ingot.compile.options import DetectorOptions
from ingot.compile.options import CompileOptions
from ingot.compile.options import TargetOptions
from ingot.compile.plan import LoweredPrograms, ProgramPlan
from ingot.compile.tt import plugin
from ingot.compile.tt.lowering import LoweringResult, lower_programs, lowering_workers
from ingot.compile.tt.specs import DeviceSpec, model_shapes, optimization_level
from ingot.compile.tt.weight_dtypes import HELD_FORMATS, plugin_weight_dtype
from ingot.compile.weights import ProgramWeights, named_tensors
from ingot.progress import StageProgress

DEVICE_VERIFICATION = "running a TT program needs a {device} and the TT runtime (tt-metal), neither of which is here"


@dataclass(frozen=True)
class TtTarget:
    """A Tenstorrent device: one static-shape program per prefill bucket and per decode batch size (a
    detector: per batch size), lowered through torchax and the TT PJRT plugin (compile-only) to TT-NN
    flatbuffers. Running them needs the device, so nothing is measured at verification (``accuracy`` None):
    a detector's accuracy is predicted in the spec's number formats instead."""

    spec: DeviceSpec
    program_suffix: str = ".ttnn"
    native_library: bool = False  # its programs run on the device, not through ingot's library
    accuracy: None = None

    @property
    def name(self) -> str:
        return self.spec.target

    @property
    def detector_policy(self) -> str:
        return self.spec.detector_policy

    def buckets(self, options: CompileOptions) -> tuple[list[int], list[int]]:
        shapes = model_shapes(self.spec, options)
        return shapes.prefill_buckets, shapes.decode_batches

    def plan(self, options: CompileOptions) -> list[ProgramPlan]:
        shapes = model_shapes(self.spec, options)
        static = dict(blocks=shapes.blocks_per_sequence, cache_blocks=shapes.cache_blocks, paged_cache=True)
        return [
            ProgramPlan(f"prefill_{n}", "prefill", batch=(1, 1), tokens=(n, n), **static) for n in shapes.prefill_buckets
        ] + [ProgramPlan(f"decode_{b}", "decode", batch=(b, b), tokens=(1, 1), **static) for b in shapes.decode_batches]

    def detector_plan(self, options: DetectorOptions) -> list[ProgramPlan]:
        """One static program per batch size: detect_1, detect_2, ... (TT programs have no dynamic dimension)."""
        return [ProgramPlan(f"detect_{b}", "detect", batch=(b, b)) for b in options.batch_sizes]

    def optimization_level(self, options: TargetOptions) -> int:
        return optimization_level(self.spec, options.optimization_level)

    def lower_all(
        self,
        plans: list[ProgramPlan],
        programs: Iterable[tuple[ProgramPlan, ExportedProgram]],
        out_dir: Path,
        options: TargetOptions,
        cache_dir: Path,
        progress: StageProgress,
    ) -> LoweredPrograms:
        """Lower every planned program in plugin workers that start before the first capture: each program lowers
        while the next is captured; name -> (artifact-relative file, TtProgramInfo)."""
        level = self.optimization_level(options)
        weight_format = getattr(options, "weight_format", WeightFormat.FP32.value)  # a detector's: fp32
        workers = lowering_workers(len(plans))
        title = f"lower {len(plans)} programs ({self.name}, level {level}, {weight_format} weights, {workers} at a time)"
        results = lower_programs(
            ((plan.name, exported) for plan, exported in programs), out_dir,
            target=self.name, optimization_level=level,
            allow_cpu_fallback=options.allow_cpu_fallback, cache_dir=cache_dir,
            session_root=out_dir.parent,  # the build directory: `ingot gc` removes it if the compile is killed
            weight_dtype=plugin_weight_dtype(weight_format, self.name),
            names=[plan.name for plan in plans], workers=workers,
            waiting=lambda: progress.stage(title),  # what is left to lower once the last program is captured
        )  # fmt: skip
        toolchain = plugin.toolchain(self.name)
        lowered = {}
        for r in results:
            info = TtProgramInfo(
                status=r.status,
                ttnn_ops=r.ttnn_ops,
                unlowered_ops=r.unlowered_ops,
                error=r.error if r.status != "lowered" else None,
                dumps=[f"{out_dir.name}/{f}" for kind, f in sorted(r.files.items()) if kind.endswith("_mlir")],
                weight_inputs=[w["name"] for w in r.weights],
                weight_formats=held_formats(r),
                inputs=[TensorSpec(**t) for t in r.inputs],
                outputs=[TensorSpec(**t) for t in r.outputs],
                toolchain=toolchain,
                optimization_level=level,
                seconds=r.seconds,
                torch_program=f"{out_dir.name}/{r.files['torch_program']}",
                jax_program=f"{out_dir.name}/{r.files['jax_program']}" if "jax_program" in r.files else None,
            )
            lowered[r.name] = (f"{out_dir.name}/{r.files['ttnn']}" if "ttnn" in r.files else "", info)
        return lowered

    def weights(self, module: torch.nn.Module, programs: list[tuple[ProgramPlan, ExportedProgram]]) -> ProgramWeights:
        """The model's own tensors: each program's weights go to the device in the formats its policy names."""
        return ProgramWeights(named_tensors(module))

    def manifest_info(self) -> TtTargetInfo:
        return TtTargetInfo(
            spec=self.spec.as_dict(),
            device_verification=DEVICE_VERIFICATION.format(device=self.spec.device),
            descriptor=plugin.descriptor_info(self.name),
        )


def held_formats(result: LoweringResult) -> dict[str, WeightFormat]:
    """Each weight a lowered program reads -> the format its binary reads it in (float32 unless converted)."""
    return {name: HELD_FORMATS.get(block, WeightFormat.FP32) for name, block in result.parameter_formats.items()}
