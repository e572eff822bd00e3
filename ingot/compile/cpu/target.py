"""The cpu target: AOTInductor native code, one program per kind of step, frozen onto prepacked weights."""

from __future__ import annotations

import dataclasses
import itertools
import operator
import shutil
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ingot.artifacts.weight_format import WeightFormat
from ingot.compile.cpu.isa import vector_isa
from ingot.compile.cpu.packed_linears import empty_packed, pack_weights, use_packed_linears
from ingot.compile.cpu.workers import lower_in_workers, lowering_workers
from ingot.compile.options import DetectorOptions
from ingot.compile.options import CompileOptions
from ingot.compile.options import TargetOptions
from ingot.compile.tt.formats import quantize
from ingot.compile.weight_formats import tensor_formats, tt_format
from ingot.compile.weights import ProgramWeights, named_tensors
from ingot.compile.plan import AccuracyBar, LoweredPrograms, ProgramPlan
from ingot.progress import StageProgress, note


@dataclass(frozen=True)
class CpuTarget:
    """AOTInductor native code. Shapes the buckets share become one program with a dynamic dimension,
    so a dozen buckets cost a few compiles, and the runtime runs each step at its exact size.

    A language model's programs take its weights as inputs, one copy in the weights file for all of them, in the
    layout ingot's matrix product reads (see packed_linears.py): prefill runs up to ``max_batch`` prompts at once
    (more rows for each pass over the weights), decode one row per sequence, one program for every batch size,
    so a sequence's logits do not depend on what else is in the step (a static program for one sequence, as the
    frozen artifacts had, differed from the batched one in the last bits). A detector's programs are frozen instead: batch norms fold into the convolutions and oneDNN gets
    its weights prepacked, a copy per program (a detector is small). The artifact carries ingot's native library,
    which runs its programs (and holds the decode attention kernel and the matrix product)."""

    name: str = "cpu"
    program_suffix: str = ".pt2"
    native_library: bool = True
    accuracy: AccuracyBar = AccuracyBar(min_pcc=0.9999, min_top1=0.99, min_detection_pcc=0.99, min_onnx_pcc=0.999)
    detector_policy: None = None  # its programs run here: measured, not predicted

    def buckets(self, options: CompileOptions) -> tuple[list[int], list[int]]:
        return list(options.prefill_buckets), options.decode_batches

    def plan(self, options: CompileOptions) -> list[ProgramPlan]:
        buckets = options.prefill_buckets
        packed = dict(
            packed_linears=True,
            cpu_isa=options.cpu_isa,
            weight_format=options.weight_format,
            activation_dtype=options.activation_dtype,
        )
        prefill = ProgramPlan(  # several prompts in one step: more rows for each pass over the weights
            "prefill", "prefill", batch=(1, options.max_batch), tokens=(buckets[0], buckets[-1]), **packed
        )
        decode = ProgramPlan(  # one program for every batch: a row's logits are the same bits at any batch size
            "decode", "decode", batch=(1, options.max_batch), tokens=(1, 1), decode_kernel=True, **packed
        )
        logits = ProgramPlan(  # prompt logprobs: rows of hidden states -> logits, on the packed LM head
            "logits", "logits", batch=(1, buckets[-1]), **packed
        )
        return [prefill, decode, logits]

    def detector_plan(self, options: DetectorOptions) -> list[ProgramPlan]:
        """Frozen programs (batch norms folded into the convolutions, oneDNN weights prepacked): one image has a
        static program of its own (faster than a dynamic one at one image), larger batches share one with a
        dynamic batch dimension."""
        single = ProgramPlan("detect_1", "detect", batch=(1, 1), frozen=True, cpu_isa=options.cpu_isa)
        return _single_and_batched(single, options.batch_sizes[-1])

    def lower_all(
        self,
        plans: list[ProgramPlan],
        programs: Iterable[tuple[ProgramPlan, torch.export.ExportedProgram]],
        out_dir: Path,
        options: TargetOptions,
        cache_dir: Path,
        progress: StageProgress,
    ) -> LoweredPrograms:
        """Lower each planned program once all are captured; name -> (artifact-relative file, None).

        Inductor spends most of a lowering in single-threaded Python, so with more than one core the programs
        lower side by side, each in a fresh worker process that loads its saved exported program."""
        programs = list(programs)
        files = {plan.name: out_dir / f"{plan.name}{self.program_suffix}" for plan, _ in programs}
        workers = lowering_workers(programs)
        with progress.stage(f"lower {len(programs)} programs ({self.name}, {workers} at a time)"):
            if workers == 1:
                for plan, exported in programs:
                    self.lower(exported, files[plan.name], plan)
                    note(f"{plan.name} lowered")
            else:
                lower_in_workers(self, programs, files, workers)
        return {name: (f"{out_dir.name}/{file.name}", None) for name, file in files.items()}

    def manifest_info(self) -> None:
        return None

    def weights(
        self, module: torch.nn.Module, programs: list[tuple[ProgramPlan, torch.export.ExportedProgram]]
    ) -> ProgramWeights:
        """The tensors the programs read, by the names they read them by: a language model's linears packed once
        (every program runs the same pass, so they share each packed tensor) in the formats ``--weight-format``
        chose, the rest as the model has them, but for the values the choice rounds (see weight_formats.py)."""
        if not any(plan.packed_linears for plan, _ in programs):
            return ProgramWeights(named_tensors(module))
        packed: dict[str, torch.Tensor] = {}

        def pack_once(name: str, weights: list[torch.Tensor], fmt: WeightFormat) -> torch.Tensor:
            if name not in packed:
                packed[name] = pack_weights(name, weights, fmt)
            return packed[name]

        result = ProgramWeights({})
        formats: dict[str, WeightFormat] = {}
        for plan, exported in programs:
            program = exported.module(check_guards=False)
            if plan.packed_linears:
                formats |= _formats(plan, program)
                result.packed.update(use_packed_linears(program, pack_once, formats, _bf16_inputs(plan)))
            read = [node.target for node in program.graph.find_nodes(op="get_attr")]
            result.tensors.update({name: _attr(program, name) for name in read})
        _round_to_formats(result, formats)
        return result

    def lower(self, exported: torch.export.ExportedProgram, out_file: Path, plan: ProgramPlan) -> None:
        """A program with ``packed_linears`` reads its weights from the artifact's weights file (the runtime hands
        them to it); only their shapes matter here, so the pass packs empty stand-ins. A frozen program folds
        them in instead: batch norms fold into the convolutions, projections of one input (q/k/v) concatenate into
        one product, and oneDNN gets its weights prepacked once, at the cost of a copy of the weights per program."""
        configs = (
            {"freezing": True, "cpp.enable_concat_linear": True}
            if plan.frozen
            else {"aot_inductor.package_constants_in_so": False}
        )
        module = exported.module(check_guards=False)
        if plan.packed_linears:
            use_packed_linears(module, empty_packed, _formats(plan, module), _bf16_inputs(plan))
        with warnings.catch_warnings(), torch.no_grad(), vector_isa(plan.cpu_isa):  # freezing needs no grad
            warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation noise
            _compile_and_package(module, exported.example_inputs, out_file, configs)


def _attr(module: torch.nn.Module, name: str) -> torch.Tensor:
    return operator.attrgetter(name)(module).detach()


def _formats(plan: ProgramPlan, program: torch.nn.Module) -> dict[str, WeightFormat]:
    """The format of each of the program's tensors that ``plan.weight_format`` stores in one."""
    every = {"remove_duplicate": False}  # a tied LM head is read by its own name too
    names = [name for name, _ in itertools.chain(program.named_parameters(**every), program.named_buffers(**every))]
    return tensor_formats(plan.weight_format, names)


def _bf16_inputs(plan: ProgramPlan) -> bool:
    """Whether the program's products round their inputs to bfloat16 (``--activation-dtype bf16``)."""
    return plan.activation_dtype == "bf16"


def _round_to_formats(weights: ProgramWeights, formats: dict[str, WeightFormat]) -> None:
    """Round, in ``weights``, the float32 tensors the programs read whose values a format was chosen for (norm
    weights, an untied embedding, the biases of linears packed together), and record them in ``weights.rounded``.
    A tensor read under two names stays one tensor."""
    wanted = {name: formats[name] for name in weights.tensors if name in formats}
    for name, group in weights.packed.items():
        bias_formats = {formats[bias] for bias in group.biases if bias in formats}
        if f"{name}_bias" in weights.tensors and bias_formats:
            (wanted[f"{name}_bias"],) = bias_formats
    rounded_by_storage: dict[int, torch.Tensor] = {}
    for name, fmt in wanted.items():
        tensor = weights.tensors[name]
        if tensor.data_ptr() not in rounded_by_storage:
            rounded_by_storage[tensor.data_ptr()] = quantize(tensor, tt_format(fmt))
        weights.tensors[name] = rounded_by_storage[tensor.data_ptr()]
        weights.rounded[name] = fmt


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
