"""What the pipeline asks of a target: which programs to capture (``ProgramPlan``), how to lower them, and what
accuracy a measured verification owes. ``CpuTarget`` (cpu/target.py) and ``TtTarget`` (tt/target.py) are the
two ``Target``s. Imports nothing heavy: a plan is data."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from ingot.artifacts.manifest import TtProgramInfo, TtTargetInfo
from ingot.compile.options import DetectorOptions
from ingot.compile.options import CompileOptions
from ingot.compile.options import TargetOptions
from ingot.progress import StageProgress

if TYPE_CHECKING:  # types only: torch stays out of a plan
    import torch
    from torch.export import ExportedProgram

    from ingot.compile.weights import ProgramWeights


@dataclass(frozen=True)
class ProgramPlan:
    """A program to capture: its kind and the (inclusive) batch and token ranges it must accept (a detector's
    programs take images: no tokens; a ``logits`` program takes rows of final hidden states, ``batch`` of them).

    ``blocks`` (block-table width) and ``cache_blocks`` (KV-cache blocks) are dynamic when None; a
    device target that needs static shapes fixes them. A ``frozen`` program carries its own copy of the
    weights, folded and prepacked at compile time (cpu); any other takes them from the artifact's weights file.
    A ``decode_kernel`` program calls ingot's own paged decode attention kernel, and a ``packed_linears`` one
    ingot's own matrix product on weights packed for it: kernels of ingot's native library, which the artifact
    carries. ``cpu_isa`` is the vector ISA
    a cpu program is compiled for (ingot.artifacts.cpu_isa); None: not a cpu program. ``weight_format`` is the
    ``--weight-format`` choice its packed linears are stored by (ingot/compile/weight_formats.py), and
    ``activation_dtype`` the ``--activation-dtype`` their products take their inputs in. A ``paged_cache``
    program keeps its KV cache per layer in Tenstorrent's paged layout, written by TT's paged cache ops
    (KVCacheLayout.paged).
    """

    name: str
    kind: Literal["prefill", "decode", "logits", "detect"]
    batch: tuple[int, int]
    tokens: tuple[int, int] | None = None
    blocks: int | None = None
    cache_blocks: int | None = None
    frozen: bool = False
    decode_kernel: bool = False
    packed_linears: bool = False
    cpu_isa: str | None = None
    weight_format: str = "fp32"
    activation_dtype: str = "fp32"
    paged_cache: bool = False


@dataclass(frozen=True)
class AccuracyBar:
    """What a verification that runs the programs on this host must reach: language-model logits (every
    program, and teacher-forced top-1), a detector's boxes, confidences and head maps, an exported ONNX."""

    min_pcc: float
    min_top1: float
    min_detection_pcc: float
    min_onnx_pcc: float


# program name -> (artifact-relative file, what the target records about it: None, or TtProgramInfo)
LoweredPrograms = dict[str, tuple[str, TtProgramInfo | None]]


class Target(Protocol):
    """Where the programs run. Both kinds of model (language models, detectors) talk to a target only here."""

    name: str
    program_suffix: str
    native_library: bool  # its programs run through ingot's native library, which the artifact then carries
    accuracy: AccuracyBar | None  # None: the programs need a device this host lacks; nothing runs at verification
    detector_policy: str | None  # the TT format policy a detector's accuracy is predicted in when nothing runs

    def buckets(self, options: CompileOptions) -> tuple[list[int], list[int]]:
        """The prefill token buckets and decode batch buckets the runtime pads steps to."""
        ...

    def plan(self, options: CompileOptions) -> list[ProgramPlan]:
        """A language model's programs."""
        ...

    def detector_plan(self, options: DetectorOptions) -> list[ProgramPlan]:
        """A detector's programs."""
        ...

    def lower_all(
        self,
        plans: list[ProgramPlan],
        programs: Iterable[tuple[ProgramPlan, ExportedProgram]],
        out_dir: Path,
        options: TargetOptions,
        cache_dir: Path,
        progress: StageProgress,
    ) -> LoweredPrograms:
        """Lower every planned program into ``out_dir``. ``programs`` captures each one as it is iterated over: a
        target may lower one while the next is captured."""
        ...

    def weights(self, module: torch.nn.Module, programs: list[tuple[ProgramPlan, ExportedProgram]]) -> ProgramWeights:
        """What the artifact's weights file holds, by the names the programs read them by."""
        ...

    def manifest_info(self) -> TtTargetInfo | None:
        """The target's own manifest section."""
        ...
