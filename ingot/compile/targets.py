"""Compile targets: which programs a target builds for the buckets, how it lowers them, what accuracy it owes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ingot.compile.options import CompileOptions
from ingot.errors import OptionError


@dataclass(frozen=True)
class ProgramPlan:
    """A program to capture: its kind and the (inclusive) batch and token ranges it must accept."""

    name: str
    kind: Literal["prefill", "decode"]
    batch: tuple[int, int]
    tokens: tuple[int, int]


@dataclass(frozen=True)
class CpuTarget:
    """AOTInductor native code. Shapes the buckets share become one program with a dynamic dimension,
    so a dozen buckets cost two compiles; the runtime still pads every step to a bucket."""

    name: str = "cpu"
    min_pcc: float = 0.9999
    min_top1: float = 0.99
    min_detection_pcc: float = 0.99  # boxes, confidences and head maps of a detector
    min_onnx_pcc: float = 0.999
    program_suffix: str = ".pt2"

    def plan(self, options: CompileOptions) -> list[ProgramPlan]:
        buckets = options.prefill_buckets
        return [
            ProgramPlan("prefill", "prefill", batch=(1, 1), tokens=(buckets[0], buckets[-1])),
            ProgramPlan("decode", "decode", batch=(1, options.max_batch), tokens=(1, 1)),
        ]

    def lower(self, exported: torch.export.ExportedProgram, out_file: Path) -> None:
        # Weights stay out of the shared library: every program loads the one weights file.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation noise
            torch._inductor.aoti_compile_and_package(
                exported,
                package_path=str(out_file),
                inductor_configs={"aot_inductor.package_constants_in_so": False},
            )


CPU = CpuTarget()


def get_target(name: str) -> CpuTarget:
    if name == "cpu":
        return CPU
    raise OptionError(f"target {name}: Tenstorrent lowering is not available in this build of ingot yet")
