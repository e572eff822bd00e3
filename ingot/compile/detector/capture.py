"""Capture a detector as a torch.export program for one ProgramPlan: images in, three head maps out."""

from __future__ import annotations

import torch
from torch.export import Dim, ExportedProgram

from ingot.artifacts.manifest import TensorSpec
from ingot.compile.plan import ProgramPlan
from ingot.models.yolov4.network import YOLOv4
from ingot.models.yolov4.spec import STRIDES

OUTPUT_NAMES = ("stride8", "stride16", "stride32")  # the three head maps, finest first


def export_detector(model: YOLOv4, batch: tuple[int, int], size: int) -> ExportedProgram:
    """torch.export of the network for an (inclusive) batch range: a dynamic batch dimension when it is a range."""
    low, high = batch
    example = torch.zeros(min(2, high) if low != high else low, 3, size, size)
    dynamic = {"images": {0: Dim("batch", min=low, max=high)}} if low != high else None
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=dynamic)


def capture_detector(
    model: YOLOv4, plan: ProgramPlan, size: int
) -> tuple[ExportedProgram, list[TensorSpec], list[TensorSpec]]:
    """Export ``model`` for ``plan``; returns the program and its input and output signatures."""
    batch = "batch" if plan.batch[0] != plan.batch[1] else plan.batch[0]
    channels = 3 * (5 + model.num_classes)
    inputs = [TensorSpec(name="images", dtype="float32", shape=[batch, 3, size, size])]
    outputs = [
        TensorSpec(name=name, dtype="float32", shape=[batch, channels, size // stride, size // stride])
        for name, stride in zip(OUTPUT_NAMES, STRIDES)
    ]
    return export_detector(model, plan.batch, size), inputs, outputs
