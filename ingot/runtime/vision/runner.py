"""Runs a detector's compiled program on a batch of letterboxed images, padded only to a batch a program runs."""

from __future__ import annotations

from pathlib import Path

import torch

from ingot.artifacts.manifest import Manifest
from ingot.errors import ProgramShapeError
from ingot.runtime.buckets import padded_size, step_sizes
from ingot.runtime.programs import load_programs, program_for


class DetectorRunner:
    def __init__(self, directory: Path, manifest: Manifest) -> None:
        if manifest.detector is None:
            raise ProgramShapeError(f"{manifest.key}: not a detector artifact")
        self.manifest = manifest
        self.info = manifest.detector
        self.programs = [p for p in load_programs(directory, manifest).values() if p.spec.kind == "detect"]
        # a static program's batch, and every batch a dynamic one takes: 3 images run as 3, not padded to 4
        self.batch_sizes = step_sizes([p.spec for p in self.programs], "detect", lambda spec: spec.batch)
        self.max_batch = self.batch_sizes[-1]

    def bucket(self, count: int) -> int:
        """The smallest batch a program runs that holds ``count`` images."""
        return padded_size(count, self.batch_sizes, "a batch holds {} images")

    def run(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [n, 3, size, size] -> the head maps, each [n, ...]; a batch no program runs is padded with zeros.
        Compiled code does not check shapes, so a wrong one is refused here."""
        size = self.info.input_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size) or images.dtype != torch.float32:
            raise ProgramShapeError(f"images must be float32 [n, 3, {size}, {size}], not {images.dtype} {list(images.shape)}")
        count = images.shape[0]
        bucket = self.bucket(count)
        if bucket > count:
            images = torch.cat([images, images.new_zeros(bucket - count, 3, size, size)])
        program = program_for(self.programs, "detect", bucket)
        with torch.no_grad():
            heads = program.run(images.contiguous())
        return [head[:count] for head in heads]
