"""Compile targets: which programs a target builds for the buckets, how it lowers them, what accuracy it owes."""

from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing
import os
import shutil
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil
import torch

from ingot.compile.detector_options import DetectorOptions
from ingot.compile.options import CompileOptions, TargetOptions


@dataclass(frozen=True)
class ProgramPlan:
    """A program to capture: its kind and the (inclusive) batch and token ranges it must accept (a detector's
    programs take images: no tokens).

    ``blocks`` (block-table width) and ``cache_blocks`` (KV-cache blocks) are dynamic when None; a
    device target that needs static shapes fixes them. A ``frozen`` program carries its own copy of the
    weights, folded and prepacked at compile time (cpu). A ``decode_kernel`` program calls ingot's own paged
    decode attention kernel, and a ``packed_linears`` one (frozen) ingot's own matrix product for a few rows on
    weights it packs: kernels of ingot's native library, which the artifact carries.
    """

    name: str
    kind: Literal["prefill", "decode", "detect"]
    batch: tuple[int, int]
    tokens: tuple[int, int] | None = None
    blocks: int | None = None
    cache_blocks: int | None = None
    frozen: bool = False
    decode_kernel: bool = False
    packed_linears: bool = False


@dataclass(frozen=True)
class CpuTarget:
    """AOTInductor native code. Shapes the buckets share become one program with a dynamic dimension,
    so a dozen buckets cost a few compiles, and the runtime runs each step at its exact size.

    Every program is frozen: it carries its own copy of the weights, prepacked for its matrix products. Prefill
    runs them on oneDNN (1.6-1.8x MKL repacking the weights on every call), for up to ``max_batch`` prompts at
    once (4 prompts of 128 tokens in 0.80-0.89 of the time one at a time takes). Decode runs them on ingot's own
    matrix product for a few rows, on weights it packs (batched decode steps 1.37x faster than on oneDNN at
    batch 8, 1.2-1.3x at 32); one sequence has a static program of its own, and since both decode programs
    sum every row the same way, a sequence's logits do not depend on what else is in the step.
    ``shared_weights`` keeps every program on the one weights file. The artifact carries ingot's native library,
    which runs its programs (and holds the decode attention kernel and the matrix product)."""

    name: str = "cpu"
    native_library: bool = True
    min_pcc: float = 0.9999
    min_top1: float = 0.99
    min_detection_pcc: float = 0.99  # boxes, confidences and head maps of a detector
    min_onnx_pcc: float = 0.999
    program_suffix: str = ".pt2"
    verify_stage: str = "verify against float32 eager"
    detector_verify_stage: str = "verify against float32 eager"

    def buckets(self, options: CompileOptions) -> tuple[list[int], list[int]]:
        """The prefill token buckets and decode batch buckets the runtime pads steps to."""
        return list(options.prefill_buckets), options.decode_batches

    def plan(self, options: CompileOptions) -> list[ProgramPlan]:
        buckets = options.prefill_buckets
        prefill = ProgramPlan(  # several prompts in one step: more rows for each pass over the weights
            "prefill", "prefill", batch=(1, options.max_batch), tokens=(buckets[0], buckets[-1]),
            frozen=not options.shared_weights,
        )
        decode = dict(kind="decode", tokens=(1, 1), decode_kernel=True)
        if options.shared_weights:
            return [prefill, ProgramPlan("decode", batch=(1, options.max_batch), **decode)]
        single = ProgramPlan("decode_1", batch=(1, 1), frozen=True, packed_linears=True, **decode)
        return [prefill, *_single_and_batched(single, options.max_batch)]

    def detector_plan(self, options: DetectorOptions) -> list[ProgramPlan]:
        """Frozen programs (batch norms folded into the convolutions, oneDNN weights prepacked: 1.4x the unfrozen
        program at 320): one image has a static program of its own (1.13x the dynamic one at 320), larger
        batches share one with a dynamic batch dimension."""
        single = ProgramPlan("detect_1", "detect", batch=(1, 1), frozen=True)
        return _single_and_batched(single, options.batch_sizes[-1])

    def lower_all(
        self, programs: list[tuple[ProgramPlan, torch.export.ExportedProgram]], out_dir: Path, options: TargetOptions,
        cache_dir: Path, progress,
    ) -> dict:
        """Lower each planned program; name -> (artifact-relative file, target-specific info).

        Inductor spends most of a lowering in single-threaded Python (minutes per program for a real model), so
        with more than one core the programs lower side by side, each in a fresh worker process that loads its
        saved exported program: 2 workers make a 3-program compile about a third shorter."""
        files = {plan.name: out_dir / f"{plan.name}{self.program_suffix}" for plan, _ in programs}
        workers = _lowering_workers([exported for _, exported in programs])
        with progress.stage(f"lower {len(programs)} programs ({self.name}, {workers} at a time)"):
            if workers == 1:
                for plan, exported in programs:
                    self.lower(exported, files[plan.name], plan)
            else:
                _lower_in_workers(self, programs, files, workers)
        return {name: (f"{out_dir.name}/{file.name}", None) for name, file in files.items()}

    def verify(self, directory: Path, manifest, reference, tokenizer):
        """Run the artifact against the float32 reference; the report says whether it passed."""
        from ingot.compile.verify import verify_artifact

        return verify_artifact(directory, manifest, reference, tokenizer, min_pcc=self.min_pcc, min_top1=self.min_top1)

    def verify_detector(self, directory: Path, manifest, reference, onnx_file: Path | None):
        """Run the detector's program against the eager float32 network; the manifest with the report recorded."""
        from ingot.compile.detector_verify import verify_detector

        report = verify_detector(directory, manifest, reference, self.min_detection_pcc, onnx_file, self.min_onnx_pcc)
        return manifest.model_copy(update={"verification": report})

    def manifest_info(self) -> None:
        return None

    def lower(self, exported: torch.export.ExportedProgram, out_file: Path, plan: ProgramPlan) -> None:
        """By default the weights stay out of the shared library, so every program of an artifact loads the one
        weights file. A frozen program folds them in instead: batch norms fold into the convolutions and
        oneDNN gets its weights prepacked once, not reordered on every call, at the cost of a copy of the weights
        per program."""
        # Frozen: projections that read the same input (q/k/v, gate/up) become one matrix product with their
        # weights concatenated: fewer, wider GEMMs (batch-32 decode 7% faster, batch 8 12%, batch 1 the same).
        configs = (
            {"freezing": True, "cpp.enable_concat_linear": True}
            if plan.frozen
            else {"aot_inductor.package_constants_in_so": False}
        )
        module = exported.module(check_guards=False)
        if plan.packed_linears and plan.frozen:
            from ingot.compile.packed_linears import use_packed_linears

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
    from torch._inductor.package import package_aoti

    scratch = out_file.with_name(out_file.name + ".build")
    try:
        args, kwargs = example_inputs
        options = configs | {"aot_inductor.package": True, "aot_inductor.output_path": str(scratch)}
        files = torch._inductor.aot_compile(module, args, kwargs, options=options)
        package_aoti(str(out_file), files)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _lowering_workers(programs: list[torch.export.ExportedProgram]) -> int:
    """As many workers as cores and programs allow, and as memory allows: a frozen lowering holds a few copies of
    the weights besides inductor itself."""
    weights = max(sum(t.numel() * t.element_size() for t in p.state_dict.values()) for p in programs)
    per_worker = 4 * weights + 2 * 2**30
    by_memory = psutil.virtual_memory().available // per_worker
    return max(1, min(len(programs), os.cpu_count() or 1, by_memory))


def _lower_in_workers(target: CpuTarget, programs: list, files: dict[str, Path], workers: int) -> None:
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from ingot.errors import CompileError

    saved = {}
    for plan, exported in programs:
        saved[plan.name] = files[plan.name].with_name(f"{plan.name}.exported.pt2")
        torch.export.save(exported, saved[plan.name])
    try:
        # spawn, not fork: a forked child inherits the parent's OpenMP thread pool, which hangs it
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, context, initializer=_exit_with, initargs=(os.getpid(),)) as pool:
            jobs = [
                pool.submit(_lower_saved, target, saved[plan.name], files[plan.name], plan)
                for plan, _ in programs
            ]
            for job in jobs:
                job.result()
    except BrokenProcessPool as error:
        raise CompileError("a lowering worker died (out of memory?); nothing was published") from error
    finally:
        for file in saved.values():
            file.unlink(missing_ok=True)


def _exit_with(parent: int) -> None:
    """A worker's first step: die with the compile that started it, however it is killed (Linux's parent-death
    signal; elsewhere a killed compile's workers finish their program, into a build directory `ingot gc` removes)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the compile died before the signal was armed
        os._exit(1)


def _lower_saved(target: CpuTarget, exported_file: Path, out_file: Path, plan: ProgramPlan) -> None:
    """A worker process's job: one saved exported program to one compiled program."""
    torch._inductor.config.compile_threads = 1  # the workers share the cores already: no pool of its own
    if plan.decode_kernel or plan.packed_linears:
        from ingot.compile.kernels import load_kernels

        load_kernels()  # the program calls ingot's ops: loading it needs them registered
    target.lower(torch.export.load(exported_file), out_file, plan)


CPU = CpuTarget()


def get_target(name: str):
    """The target called ``name``: cpu, or a Tenstorrent device (a refused one says what is missing)."""
    if name == "cpu":
        return CPU
    from ingot.compile.tt.lowering import TtTarget
    from ingot.compile.tt.plugin import find_plugin
    from ingot.compile.tt.specs import device_spec

    spec = device_spec(name)
    find_plugin()
    return TtTarget(spec)
