"""Verification of a detector: the compiled program against the eager float32 network on letterboxed sample
images, at batch 1 and at the largest batch size. Boxes and confidences are compared after the runtime's own
decoding; the raw head maps of every program call are compared too (they are what the compile changed)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ingot.artifacts.manifest import DetectionVerificationReport, Manifest
from ingot.compile.sample_images import sample_images
from ingot.compile.verify import pcc
from ingot.runtime.vision.decode import decode_heads
from ingot.runtime.vision.letterbox import letterbox
from ingot.runtime.vision.runner import DetectorRunner

NUM_IMAGES = 2
REFERENCE = "eager float32 PyTorch"


def sample_batch(manifest: Manifest, count: int = NUM_IMAGES) -> torch.Tensor:
    info = manifest.detector
    return torch.stack([letterbox(image, info.input_size, info.preprocess.pad_value)[0] for image in sample_images(count)])


def flatten_heads(heads: list[torch.Tensor]) -> torch.Tensor:
    """Every head map of a call as one vector, for one PCC over all of them."""
    return torch.cat([h.flatten() for h in heads])


def verify_detector(
    directory: Path,
    manifest: Manifest,
    reference: nn.Module,
    min_pcc: float,
    onnx_file: Path | None = None,
    min_onnx_pcc: float | None = None,
) -> DetectionVerificationReport:
    images = sample_batch(manifest)
    with torch.no_grad():
        expected = list(reference(images))
    runner = DetectorRunner(directory, manifest)
    singles = [runner.run(images[i : i + 1]) for i in range(len(images))]
    actual = [torch.cat(parts) for parts in zip(*singles)]
    programs = {"detect (batch 1)": pcc(flatten_heads(actual), flatten_heads(expected))}
    if runner.max_batch > 1:  # the largest bucket, padded: the real images must not depend on the padding
        batched = _full_batch_run(runner, images)
        rows = [head[: len(batched[0])] for head in expected]
        programs[f"detect (batch {runner.max_batch})"] = pcc(flatten_heads(batched), flatten_heads(rows))

    info = manifest.detector
    boxes, confidences = decode_heads(actual, info)
    ref_boxes, ref_confidences = decode_heads(expected, info)
    onnx_pcc = None
    if onnx_file is not None:
        from ingot.compile.onnx_export import run_onnx

        onnx_pcc = pcc(flatten_heads(run_onnx(onnx_file, images)), flatten_heads(expected))
    box_pcc, confidence_pcc = pcc(boxes, ref_boxes), pcc(confidences, ref_confidences)
    passed = min(box_pcc, confidence_pcc, *programs.values()) >= min_pcc and (
        onnx_pcc is None or onnx_pcc >= (min_onnx_pcc or 0)
    )
    return DetectionVerificationReport(
        reference=REFERENCE,
        images=len(images),
        input_size=info.input_size,
        box_pcc=box_pcc,
        confidence_pcc=confidence_pcc,
        max_abs_error=max(float((a - e).abs().max()) for a, e in zip(actual, expected)),
        min_box_pcc=min_pcc,
        min_confidence_pcc=min_pcc,
        programs=programs,
        onnx_pcc=onnx_pcc,
        min_onnx_pcc=min_onnx_pcc if onnx_file is not None else None,
        passed=passed,
    )


def _full_batch_run(runner: DetectorRunner, images: torch.Tensor) -> list[torch.Tensor]:
    """The sample images in a full batch of the largest size (repeated to fill it); the samples' rows back."""
    repeats = -(-runner.max_batch // len(images))
    full = images.repeat(repeats, 1, 1, 1)[: runner.max_batch]
    return [head[: min(len(images), runner.max_batch)] for head in runner.run(full)]
