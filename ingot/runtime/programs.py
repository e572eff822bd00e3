"""Compiled programs of an artifact, loaded once with one shared copy of the weights."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file

from ingot.artifacts.cpu_isa import check_cpu
from ingot.artifacts.manifest import Manifest, ProgramSpec
from ingot.artifacts.unpacked import unpack_directory
from ingot.errors import ArtifactError, ProgramShapeError


class CompiledProgram:
    """A compiled program, run through ingot's ``run_program`` op: unlike torch's Python binding of the
    program, the op releases the interpreter lock while it runs, so a server stays responsive during a step."""

    def __init__(self, spec: ProgramSpec, program: torch.ScriptObject) -> None:
        self.spec = spec
        self._program = program

    def constant_names(self) -> list[str]:
        """The weights the program reads from the artifact's weights file (none for a frozen program)."""
        return [] if self.spec.frozen else list(self._program.constant_fqns())

    def run(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """The program's outputs for ``inputs``, given in manifest order."""
        return torch.ops.ingot.run_program(self._program, list(inputs))


def program_for(programs: Iterable[CompiledProgram], kind: str, batch: int, tokens: int | None = None) -> CompiledProgram:
    """The program of ``kind`` that takes a step of ``batch`` (x ``tokens``): compiled code does not check
    shapes, so a step none takes is refused here."""
    for program in programs:
        if program.spec.kind == kind and program.spec.accepts(batch, tokens):
            return program
    shape = f"batch {batch}" if tokens is None else f"batch {batch} x {tokens} tokens"
    raise ProgramShapeError(f"no {kind} program takes {shape}")


def load_programs(directory: Path, manifest: Manifest) -> dict[str, CompiledProgram]:
    """Load every program and point its constants at one set of weight tensors (no copies). A frozen program
    carries its own weights, so an artifact of frozen programs never reads the weights file.

    ``manifest`` comes from ``check_artifact``, which vouched for the files; every path is checked again here to
    lie inside ``directory`` before anything is loaded from it (native code above all). Each package is unpacked
    into a directory of its own that is removed as soon as it has loaded (see ingot.artifacts.unpacked)."""
    check_cpu(directory.name, manifest)  # native code this CPU cannot run would die of SIGILL: refused first
    files = {spec.name: (_inside(directory, spec.file), [_inside(directory, name) for name in spec.kernels])
             for spec in manifest.programs}  # fmt: skip
    shared = any(not spec.frozen for spec in manifest.programs)
    weights = load_file(_inside(directory, manifest.weights.file)) if shared else {}
    programs = {}
    for spec in manifest.programs:
        package, libraries = files[spec.name]
        for library in libraries:  # a library loaded before (this artifact's or another's) registers nothing
            torch.ops.load_library(str(library))
        if not hasattr(torch.ops.ingot, "run_program"):
            raise ArtifactError(
                f"{directory.name}: program {spec.name} comes without ingot's program runner "
                "(compiled by an older ingot): compile the model again"
            )
        with unpack_directory():
            program = torch.classes.ingot.Program(str(package))
        if not spec.frozen:
            constants = {}
            for name in program.constant_fqns():
                stored = manifest.weights.aliases.get(name, name)
                if stored not in weights:
                    raise ArtifactError(f"{directory.name}: program {spec.name} needs weight {name}, not in the artifact")
                constants[name] = weights[stored]
            program.load_constants(constants)
        programs[spec.name] = CompiledProgram(spec, program)
    return programs


def _inside(directory: Path, name: str) -> Path:
    """The file ``name`` of the artifact in ``directory``, refused unless it is a regular file that lies inside
    that directory once every symlink is resolved."""
    base = directory.resolve()
    path = base / name
    if path.is_symlink() or not path.resolve().is_relative_to(base) or not path.is_file():
        raise ArtifactError(f"{directory.name}: {name} is not a file inside the artifact")
    return path
