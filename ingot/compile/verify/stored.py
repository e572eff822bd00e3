"""`ingot verify`: check a stored artifact's files, rebuild its float32 reference from the artifact alone, and run
its kind's verification again.

An artifact whose weights are stored in a smaller format (`--weight-format`) no longer holds the original float32
weights, so what its compile measured (the format's cost against them) cannot be measured again from it; the manifest
keeps that report. What `ingot verify` can check honestly is that the programs compute what the stored weights say:
the reference is the eager float32 model on the artifact's own weights, decoded (the values the kernels read), held
to the strict float32 bar, since only the arithmetic differs."""

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
from ingot.compile.verify.references import DECODED_REFERENCE, LLM_REFERENCE, detector_reference, reference_model


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
    decoded = manifest.options.get("weight_format", "fp32") != "fp32"
    name = DECODED_REFERENCE if decoded else LLM_REFERENCE
    return verify_llm(directory, manifest, reference, tokenizer, bar.min_pcc, bar.min_top1, name)
