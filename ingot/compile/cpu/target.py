"""The cpu target: AOTInductor native code, one program per kind of step, frozen onto prepacked weights."""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ingot.compile.cpu.packed_linears import use_packed_linears
from ingot.compile.cpu.workers import lower_in_workers, lowering_workers
from ingot.compile.options import DetectorOptions
from ingot.compile.options import CompileOptions
from ingot.compile.options import TargetOptions
from ingot.compile.plan import AccuracyBar, LoweredPrograms, ProgramPlan
from ingot.progress import StageProgress


@dataclass(frozen=True)
class CpuTarget:
    """AOTInductor native code. Shapes the buckets share become one program with a dynamic dimension,
    so a dozen buckets cost a few compiles, and the runtime runs each step at its exact size.

    Every program is frozen: it carries its own copy of the weights, prepacked for its matrix products, so no
    call repacks them. Prefill runs them on oneDNN, for up to ``max_batch`` prompts at once (more rows for each
    pass over the weights). Decode runs them on ingot's own matrix product for a few rows, on weights it packs,
    whose weight stream overlaps its arithmetic where oneDNN's leaves it partly idle; one sequence has a static
    program of its own, and since both decode programs sum every row the same way, a sequence's logits do not
    depend on what else is in the step. ``shared_weights`` keeps every program on the one weights file. The
    artifact carries ingot's native library, which runs its programs (and holds the decode attention kernel and
    the matrix product)."""

    name: str = "cpu"
    program_suffix: str = ".pt2"
    native_library: bool = True
    accuracy: AccuracyBar = AccuracyBar(min_pcc=0.9999, min_top1=0.99, min_detection_pcc=0.99, min_onnx_pcc=0.999)
    detector_policy: None = None  # its programs run here: measured, not predicted

    def buckets(self, options: CompileOptions) -> tuple[list[int], list[int]]:
        return list(options.prefill_buckets), options.decode_batches

    def plan(self, options: CompileOptions) -> list[ProgramPlan]:
        buckets = options.prefill_buckets
        prefill = ProgramPlan(  # several prompts in one step: more rows for each pass over the weights
            "prefill", "prefill", batch=(1, options.max_batch), tokens=(buckets[0], buckets[-1]),
            frozen=not options.shared_weights,
        )
        decode = dict(kind="decode", tokens=(1, 1), decode_kernel=True)
        logits = ProgramPlan("logits", "logits", batch=(1, buckets[-1]))  # prompt logprobs: hidden rows -> logits
        if options.shared_weights:
            return [prefill, ProgramPlan("decode", batch=(1, options.max_batch), **decode), logits]
        single = ProgramPlan("decode_1", batch=(1, 1), frozen=True, packed_linears=True, **decode)
        return [prefill, *_single_and_batched(single, options.max_batch), logits]

    def detector_plan(self, options: DetectorOptions) -> list[ProgramPlan]:
        """Frozen programs (batch norms folded into the convolutions, oneDNN weights prepacked): one image has a
        static program of its own (faster than a dynamic one at one image), larger batches share one with a
        dynamic batch dimension."""
        single = ProgramPlan("detect_1", "detect", batch=(1, 1), frozen=True)
        return _single_and_batched(single, options.batch_sizes[-1])

    def lower_all(
        self,
        programs: list[tuple[ProgramPlan, torch.export.ExportedProgram]],
        out_dir: Path,
        options: TargetOptions,
        cache_dir: Path,
        progress: StageProgress,
    ) -> LoweredPrograms:
        """Lower each planned program; name -> (artifact-relative file, None).

        Inductor spends most of a lowering in single-threaded Python, so with more than one core the programs
        lower side by side, each in a fresh worker process that loads its saved exported program."""
        files = {plan.name: out_dir / f"{plan.name}{self.program_suffix}" for plan, _ in programs}
        workers = lowering_workers([exported for _, exported in programs])
        with progress.stage(f"lower {len(programs)} programs ({self.name}, {workers} at a time)"):
            if workers == 1:
                for plan, exported in programs:
                    self.lower(exported, files[plan.name], plan)
            else:
                lower_in_workers(self, programs, files, workers)
        return {name: (f"{out_dir.name}/{file.name}", None) for name, file in files.items()}

    def manifest_info(self) -> None:
        return None

    def lower(self, exported: torch.export.ExportedProgram, out_file: Path, plan: ProgramPlan) -> None:
        """By default the weights stay out of the shared library, so every program of an artifact loads the one
        weights file. A frozen program folds them in instead: batch norms fold into the convolutions and
        oneDNN gets its weights prepacked once, not reordered on every call, at the cost of a copy of the weights
        per program."""
        # Frozen: projections that read the same input (q/k/v, gate/up) become one matrix product with their
        # weights concatenated: fewer, wider GEMMs.
        configs = (
            {"freezing": True, "cpp.enable_concat_linear": True}
            if plan.frozen
            else {"aot_inductor.package_constants_in_so": False}
        )
        module = exported.module(check_guards=False)
        if plan.packed_linears and plan.frozen:
            use_packed_linears(module)
        with warnings.catch_warnings(), torch.no_grad():  # inductor freezes only a graph compiled without grad
            warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation noise
            _compile_and_package(module, exported.example_inputs, out_file, configs)


def _single_and_batched(single: ProgramPlan, largest: int) -> list[ProgramPlan]:
    """``single`` (batch 1, static shapes: faster than a dynamic program at one sequence or image) and, when
    batches go beyond one, its twin with a dynamic batch of 2..``largest``."""
    if largest == 1:
        return [single]
    name = single.name.removesuffix("_1")
    return [single, dataclasses.replace(single, name=name, batch=(2, largest))]


def _compile_and_package(module: torch.nn.Module, example_inputs: tuple, out_file: Path, configs: dict) -> None:
    """``aoti_compile_and_package`` with the program's generated sources and library written to a scratch
    directory beside ``out_file`` instead of inductor's cache: a frozen program's library holds a copy of the
    weights (hundreds of MB for a real model) that the cache would keep forever and never reuse. Kernels compiled
    on the way still go to (and come from) the cache."""
    from torch._inductor.package import package_aoti  # torch's private package module: only a lowering needs it

    scratch = out_file.with_name(out_file.name + ".build")
    try:
        args, kwargs = example_inputs
        options = configs | {"aot_inductor.package": True, "aot_inductor.output_path": str(scratch)}
        files = torch._inductor.aot_compile(module, args, kwargs, options=options)
        package_aoti(str(out_file), files)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


CPU = CpuTarget()
