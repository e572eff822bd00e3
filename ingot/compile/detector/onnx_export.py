"""``--emit onnx``: the captured graph as ONNX (the interchange format TT-Forge's front end takes), checked with
``onnx.checker`` and run in onnxruntime by verification."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from ingot.errors import CompileError

ONNX_FILE = "model.onnx"  # in the artifact, beside the programs
OUTPUT_NAMES = ("stride8", "stride16", "stride32")


def export_onnx(exported: torch.export.ExportedProgram, path: Path) -> None:
    """One self-contained .onnx file (weights inside; YOLOv4's 258 MB is far below protobuf's 2 GB limit)."""
    import onnx  # only an --emit onnx compile needs it

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # it logs every torchvision op it skips
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            exported, f=str(path), external_data=False, input_names=["images"], output_names=list(OUTPUT_NAMES),
            verbose=False,
        )
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as error:
        raise CompileError(f"the exported ONNX is invalid: {str(error).splitlines()[0]}") from error


def run_onnx(path: Path, images: torch.Tensor) -> list[torch.Tensor]:
    """The ONNX model's outputs in onnxruntime's CPU provider."""
    import onnxruntime  # only verifying an emitted ONNX needs it

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"images": images.numpy()})
    return [torch.from_numpy(output) for output in outputs]
