"""`ingot compile`, for every kind of model: source -> cache key -> (on a miss) load, capture, lower, save, verify,
publish.

``build_artifact`` is the one build. A kind of model (``ModelKind``: llm/kind.py, detector/kind.py) supplies what
differs: how it loads, how a program is captured, its manifest section and its verifier; the target (plan.py)
says which programs to capture and lowers them. Nothing heavy is imported until a build is needed, so a cache
hit answers in well under two seconds.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from ingot.artifacts.manifest import (
    SCHEMA_VERSION,
    CpuRequirement,
    DetectionVerificationReport,
    Manifest,
    ProgramSpec,
    TensorSpec,
    VerificationReport,
)
from ingot.artifacts.cpu_isa import cpu_requirement
from ingot.artifacts.integrity import file_entries
from ingot.artifacts.store import ArtifactStore
from ingot.artifacts.toolchain import toolchain_versions
from ingot.compile.options import TargetOptions
from ingot.compile.plan import ProgramPlan, Target
from ingot.digest import sha256_files, sha256_json
from ingot.errors import VerificationError
from ingot.progress import StageProgress

if TYPE_CHECKING:  # types only: a cache hit imports no torch
    import torch
    from torch.export import ExportedProgram

KEY_LENGTH = 24

# A captured program: the ExportedProgram and its input and output signatures.
CapturedProgram = tuple["ExportedProgram", list[TensorSpec], list[TensorSpec]]


@dataclass(frozen=True)
class CompileResult:
    key: str
    path: Path
    cache_hit: bool
    manifest: Manifest


class ModelKind(Protocol):
    """What one kind of model brings to ``build_artifact``. Constructing one imports nothing heavy (a cache hit
    needs only ``digests`` and ``options``); ``load`` is the first heavy step."""

    name: Literal["llm", "detector"]  # the manifest's kind
    options: TargetOptions
    digests: dict[str, str]  # the sources' sha256s: with the options, what the cache key covers
    load_stage: str
    save_stage: str

    def plans(self, target: Target) -> list[ProgramPlan]:
        """The programs to capture, as the target plans them (a refused option fails here, before loading)."""
        ...

    def load(self) -> torch.nn.Module:
        """Load the model; returns the module whose weights the artifact stores."""
        ...

    def capture(self, plan: ProgramPlan) -> CapturedProgram: ...

    def exports(self) -> dict[str, Callable[[Path], None]]:
        """Further files the options ask for (an ONNX export): stage title -> writer into the build directory."""
        ...

    def manifest_fields(self, workdir: Path, target: Target) -> dict:
        """Write the kind's own files (a tokenizer) and return its manifest fields: ``model`` and its section."""
        ...

    def verify_stage(self, target: Target) -> str: ...

    def verify(self, target: Target, workdir: Path, manifest: Manifest) -> Manifest:
        """Check the built artifact; the manifest with what was found recorded (a report, or a prediction)."""
        ...

    def failure(self, report: VerificationReport | DetectionVerificationReport) -> str:
        """A failed report in one line."""
        ...


def cache_key(source_digests: dict[str, str], options: TargetOptions) -> str:
    """A hash of everything that changes the artifact: sources, options, target and toolchain."""
    inputs = {
        "schema": SCHEMA_VERSION,
        "sources": source_digests,
        "options": options.model_dump(mode="json"),
        "toolchain": toolchain_versions(),
        "compiler": _compiler_digest(),
    }
    if options.target != "cpu":
        inputs["tt"] = _tt_key_inputs(options)
    return sha256_json(inputs)[:KEY_LENGTH]


def _tt_key_inputs(options: TargetOptions) -> dict:
    """A Tenstorrent target's device spec, plugin, frontend and descriptor hash, and optimization level."""
    from ingot.compile.tt import plugin  # only a Tenstorrent key needs the plugin's versions
    from ingot.compile.tt.specs import device_spec, optimization_level

    spec = device_spec(options.target)
    level = optimization_level(spec, options.optimization_level)
    return {"spec": spec.as_dict(), "toolchain": plugin.toolchain(options.target), "optimization_level": level}


def _compiler_digest() -> str:
    """ingot's own capture and lowering code: a change to it changes the programs, version bump or not."""
    root = Path(__file__).parent
    return sha256_files([*root.rglob("*.py"), *root.rglob("*.cpp"), *root.rglob("*.h"), *root.rglob("*.ttsys")], root)


def compile_artifact(kind: ModelKind, store: ArtifactStore, quiet: bool = False) -> CompileResult:
    """The artifact of ``kind``: found in ``store`` by its key, else built and published there."""
    key = cache_key(kind.digests, kind.options)
    return build_once(store, key, lambda workdir: build_artifact(kind, key, workdir, store.root, quiet))


def build_once(store: ArtifactStore, key: str, build: Callable[[Path], Manifest]) -> CompileResult:
    """Build ``key`` in a fresh directory unless it is stored (or another process stores it while we wait)."""
    if not store.has(key):
        with store.build(key) as workdir:
            if workdir is not None:  # else another process built it while we waited for the lock
                os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(store.root / "inductor"))
                manifest = build(workdir)
                return CompileResult(key, store.path(key), cache_hit=False, manifest=manifest)
    return CompileResult(key, store.path(key), cache_hit=True, manifest=Manifest.read(store.path(key)))


def build_artifact(kind: ModelKind, key: str, workdir: Path, cache_root: Path, quiet: bool) -> Manifest:
    """Load, capture every planned program, lower them, save the weights and manifest, verify, publish."""
    os.environ["TQDM_DISABLE"] = "1"  # before tqdm loads: loaders draw their own bars; ours shows the stage
    # heavy imports only when building: torch, and the targets that lower with it
    from ingot.compile import kernels
    from ingot.compile.targets import get_target
    from ingot.compile.weights import save_weights

    target = get_target(kind.options.target)
    plans = kind.plans(target)
    exports = kind.exports()
    tt_info = target.manifest_info()
    # load, (library,) captures, lower, save, verify, (TT conversion check)
    stages = 4 + target.native_library + len(plans) + len(exports) + (tt_info is not None)
    with StageProgress(stages, quiet=quiet) as progress:
        with progress.stage(kind.load_stage):
            module = kind.load()

        libraries = []
        if target.native_library:
            with progress.stage("build ingot's native library"):
                libraries = kernels.add_to_artifact(workdir, kind.options.cpu_isa)

        captured = []

        def capture_each() -> Iterator[tuple[ProgramPlan, ExportedProgram]]:
            for plan in plans:
                with progress.stage(f"capture {plan.name}"):
                    captured.append((plan, *kind.capture(plan)))
                yield plan, captured[-1][1]

        (workdir / "programs").mkdir(exist_ok=True)
        lowered = target.lower_all(plans, capture_each(), workdir / "programs", kind.options, cache_root, progress)
        programs = []
        for plan, _, inputs, outputs in captured:
            filename, target_info = lowered[plan.name]
            programs.append(
                ProgramSpec(
                    name=plan.name, kind=plan.kind, file=filename, batch=plan.batch, tokens=plan.tokens,
                    inputs=inputs, outputs=outputs, tt=target_info, frozen=plan.frozen, kernels=libraries,
                )
            )

        for title, write in exports.items():
            with progress.stage(title):
                write(workdir)

        with progress.stage(kind.save_stage):
            program_weights = target.weights(module, [(plan, exported) for plan, exported, _, _ in captured])
            weights = save_weights(program_weights, workdir / "weights.safetensors")
            # What the programs read is in the weights file now. The packed copies were registered on modules
            # that live in reference cycles (an fx graph and its module): collect them before verification maps
            # the file, or a 1B model's build holds its weights three times over.
            captured.clear()
            del program_weights
            gc.collect()
            manifest = Manifest(
                kind=kind.name,
                key=key,
                target=target.name,
                created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                options=kind.options.model_dump(mode="json"),
                toolchain=toolchain_versions(),
                programs=programs,
                weights=weights,
                tt=tt_info,
                cpu=_cpu_section(kind.options),
                **kind.manifest_fields(workdir, target),
            )

        with progress.stage(kind.verify_stage(target)):
            manifest = kind.verify(target, workdir, manifest)
        if tt_info is not None:
            with progress.stage("check the TT conversion: JAX's CPU backend against torch"):
                manifest = check_tt_conversion(workdir, manifest, kind.options)
    report = manifest.verification
    if report is not None and not report.accepted:
        raise VerificationError(kind.failure(report))
    return publish(workdir, manifest)


def _cpu_section(options: TargetOptions) -> CpuRequirement | None:
    """What a cpu artifact's native code needs of a CPU: its ISA's flags and any the options add (None: no native
    code for a CPU, a Tenstorrent target)."""
    return cpu_requirement(options.cpu_isa, options.extra_cpu_flags) if options.cpu_isa else None


def check_tt_conversion(workdir: Path, manifest: Manifest, options: TargetOptions) -> Manifest:
    """Run every TT program's JAX function against its torch program; a disagreement fails the build unless the
    options allow an unverified artifact, which then records it."""
    from ingot.compile.verify.tt_conversion import check_conversion, conversion_failure

    manifest = check_conversion(workdir, manifest)
    failure = conversion_failure(manifest)
    if failure and not options.allow_unverified:
        raise VerificationError(f"{failure}; --allow-unverified records it instead")
    return manifest


def publish(workdir: Path, manifest: Manifest) -> Manifest:
    """Record every file's digest and write the manifest: the build is complete."""
    manifest = manifest.model_copy(update={"files": file_entries(workdir)})
    manifest.write(workdir)
    return manifest
