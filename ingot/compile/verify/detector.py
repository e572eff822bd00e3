"""A detector's verification: the compiled program against the eager float32 network on letterboxed sample
images, at batch 1 and at the largest batch size, run through the runtime's DetectorRunner as serving runs it.
Boxes and confidences are compared after the runtime's own decoding; the raw head maps of every program call are
compared too (they are what the compile changed)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ingot.artifacts.manifest import DetectionVerificationReport, Manifest
from ingot.compile.verify.metrics import flatten_heads, max_abs_error, pcc
from ingot.compile.verify.references import DETECTOR_REFERENCE
from ingot.compile.verify.sample_inputs import sample_batch
from ingot.runtime.vision.decode import decode_heads
from ingot.runtime.vision.runner import DetectorRunner
from ingot.sizes import ceil_div


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
        onnx_pcc = pcc(flatten_heads(run_onnx(onnx_file, images)), flatten_heads(expected))
    box_pcc, confidence_pcc = pcc(boxes, ref_boxes), pcc(confidences, ref_confidences)
    passed = min(box_pcc, confidence_pcc, *programs.values()) >= min_pcc and (
        onnx_pcc is None or onnx_pcc >= (min_onnx_pcc or 0)
    )
    return DetectionVerificationReport(
        reference=DETECTOR_REFERENCE,
        images=len(images),
        input_size=info.input_size,
        box_pcc=box_pcc,
        confidence_pcc=confidence_pcc,
        max_abs_error=max_abs_error(actual, expected),
        min_box_pcc=min_pcc,
        min_confidence_pcc=min_pcc,
        programs=programs,
        onnx_pcc=onnx_pcc,
        min_onnx_pcc=min_onnx_pcc if onnx_file is not None else None,
        passed=passed,
    )


def _full_batch_run(runner: DetectorRunner, images: torch.Tensor) -> list[torch.Tensor]:
    """The sample images in a full batch of the largest size (repeated to fill it); the samples' rows back."""
    repeats = ceil_div(runner.max_batch, len(images))
    full = images.repeat(repeats, 1, 1, 1)[: runner.max_batch]
    return [head[: min(len(images), runner.max_batch)] for head in runner.run(full)]


def run_onnx(path: Path, images: torch.Tensor) -> list[torch.Tensor]:
    """The ONNX model's outputs in onnxruntime's CPU provider."""
    import onnxruntime  # only an artifact with an ONNX export needs it

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"images": images.numpy()})
    return [torch.from_numpy(output) for output in outputs]
