"""``--emit onnx``: the captured graph as ONNX (the interchange format TT-Forge's front end takes), checked with
``onnx.checker`` (verification runs it in onnxruntime)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from ingot.compile.detector.capture import OUTPUT_NAMES
from ingot.errors import CompileError



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

