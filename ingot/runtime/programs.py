"""Compiled programs of an artifact, loaded once with one shared copy of the weights."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file

from ingot.artifacts.manifest import Manifest, ProgramSpec
from ingot.errors import ArtifactError, ProgramShapeError


class CompiledProgram:
    """A compiled program, run through ingot's ``run_program`` op: unlike torch's Python binding of the
    program, the op releases the interpreter lock while it runs, so a server stays responsive during a step."""

    def __init__(self, spec: ProgramSpec, program: torch.ScriptObject) -> None:
        self.spec = spec
        self._program = program

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
    carries its own weights, so an artifact of frozen programs never reads the weights file."""
    shared = any(not spec.frozen for spec in manifest.programs)
    weights = load_file(directory / manifest.weights.file) if shared else {}
    programs = {}
    for spec in manifest.programs:
        for library in spec.kernels:  # a library loaded before (this artifact's or another's) registers nothing
            torch.ops.load_library(str(directory / library))
        if not hasattr(torch.ops.ingot, "run_program"):
            raise ArtifactError(
                f"{directory.name}: program {spec.name} comes without ingot's program runner "
                "(compiled by an older ingot): compile the model again"
            )
        program = torch.classes.ingot.Program(str(directory / spec.file))
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
