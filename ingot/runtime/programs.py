"""Compiled programs of an artifact, loaded once with one shared copy of the weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ingot.artifacts.manifest import Manifest, ProgramSpec
from ingot.errors import ArtifactError


@dataclass
class CompiledProgram:
    spec: ProgramSpec
    run: Any  # the AOTInductor runner: call it with the program's inputs in manifest order


def load_programs(directory: Path, manifest: Manifest) -> dict[str, CompiledProgram]:
    """Load every program and point its constants at one set of weight tensors (no copies). A frozen program
    carries its own weights, so an artifact of frozen programs never reads the weights file."""
    shared = any(not spec.frozen for spec in manifest.programs)
    weights = load_file(directory / manifest.weights.file) if shared else {}
    programs = {}
    for spec in manifest.programs:
        for library in spec.kernels:  # a library loaded before (this artifact's or another's) registers nothing
            torch.ops.load_library(str(directory / library))
        runner = torch._inductor.aoti_load_package(str(directory / spec.file))
        if not spec.frozen:
            constants = {}
            for name in runner.get_constant_fqns():
                stored = manifest.weights.aliases.get(name, name)
                if stored not in weights:
                    raise ArtifactError(f"{directory.name}: program {spec.name} needs weight {name}, not in the artifact")
                constants[name] = weights[stored]
            runner.load_constants(constants, check_full_update=True, user_managed=True)
        programs[spec.name] = CompiledProgram(spec, runner)
    return programs
