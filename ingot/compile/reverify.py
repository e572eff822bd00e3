"""`ingot verify`: check an artifact's files, rebuild its float32 reference from the artifact alone, re-verify."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.manifest import DetectionVerificationReport, Manifest, VerificationReport
from ingot.compile.targets import get_target
from ingot.errors import ArtifactError

STEP_PREFIX = "model."  # weights are stored under the CausalLMStep wrapper's names


def reference_model(directory: Path, manifest: Manifest) -> PreTrainedModel:
    """The eager float32 transformers model with the artifact's own config and weights."""
    config_dict = dict(manifest.model.config)
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    weights = load_file(directory / manifest.weights.file)
    for alias, owner in manifest.weights.aliases.items():
        weights[alias] = weights[owner]
    state = {name.removeprefix(STEP_PREFIX): tensor for name, tensor in weights.items()}
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise ArtifactError(f"{directory.name}: weights lack {missing[0]}")
    return model.eval()


def reverify(directory: Path) -> VerificationReport | DetectionVerificationReport | None:
    """Check the artifact, rebuild its float32 reference and let its target verify it (None: the target
    cannot run its programs on this host, e.g. a Tenstorrent device target)."""
    transformers.utils.logging.set_verbosity_error()
    manifest = check_artifact(directory)
    if manifest.kind == "detector":
        return _reverify_detector(directory, manifest)
    target = get_target(manifest.target)
    tokenizer = AutoTokenizer.from_pretrained(directory / manifest.tokenizer.directory)
    reference = reference_model(directory, manifest)
    return target.verify(directory, manifest, reference, tokenizer)


def detector_reference(directory: Path, manifest: Manifest) -> torch.nn.Module:
    """The eager float32 network rebuilt from the artifact's own weights (stored under the network's module names)."""
    from ingot.models.yolov4.network import YOLOv4

    reference = YOLOv4(num_classes=manifest.model.config["num_classes"])
    missing, unexpected = reference.load_state_dict(load_file(directory / manifest.weights.file), strict=False)
    if missing or unexpected:
        raise ArtifactError(f"{directory.name}: weights do not fit YOLOv4 ({(missing or unexpected)[0]})")
    return reference.eval()


def _reverify_detector(directory: Path, manifest: Manifest) -> DetectionVerificationReport | None:
    """A cpu detector's program against its rebuilt reference; None for a device target's (they need the device)."""
    from ingot.compile.detector_pipeline import ONNX_FILE
    from ingot.compile.detector_verify import verify_detector

    if manifest.target != "cpu":
        return None
    target = get_target(manifest.target)
    onnx_file = directory / ONNX_FILE if ONNX_FILE in manifest.files else None
    reference = detector_reference(directory, manifest)
    return verify_detector(directory, manifest, reference, target.min_detection_pcc, onnx_file, target.min_onnx_pcc)
