"""`ingot verify`: check a stored artifact's files, rebuild its float32 reference from the artifact alone, and run
its kind's verification again."""

from __future__ import annotations

from pathlib import Path

import transformers
from transformers import AutoTokenizer

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.manifest import DetectionVerificationReport, VerificationReport
from ingot.compile.options import ONNX_FILE
from ingot.compile.targets import get_target
from ingot.compile.verify.detector import verify_detector
from ingot.compile.verify.llm import llm_bar, verify_llm
from ingot.compile.verify.references import detector_reference, reference_model


def verify_stored(directory: Path) -> VerificationReport | DetectionVerificationReport | None:
    """Check the artifact, rebuild its float32 reference and verify it against its target's bar (None: the target
    cannot run its programs on this host, e.g. a Tenstorrent device target)."""
    transformers.utils.logging.set_verbosity_error()
    manifest = check_artifact(directory)
    bar = get_target(manifest.target).accuracy
    if bar is None:
        return None
    if manifest.kind == "detector":
        onnx_file = directory / ONNX_FILE if ONNX_FILE in manifest.files else None
        reference = detector_reference(directory, manifest)
        return verify_detector(directory, manifest, reference, bar.min_detection_pcc, onnx_file, bar.min_onnx_pcc)
    tokenizer = AutoTokenizer.from_pretrained(directory / manifest.tokenizer.directory)
    reference = reference_model(directory, manifest)
    bar = llm_bar(bar, manifest)
    return verify_llm(directory, manifest, reference, tokenizer, bar.min_pcc, bar.min_top1)
