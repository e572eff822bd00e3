"""`ingot verify`: check an artifact's files, rebuild its float32 reference from the artifact alone, re-verify."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.manifest import Manifest, VerificationReport
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


def reverify(directory: Path) -> VerificationReport | None:
    """Check the artifact, rebuild its float32 reference and let its target verify it (None: the target
    cannot run its programs on this host, e.g. a Tenstorrent device target)."""
    transformers.utils.logging.set_verbosity_error()
    manifest = check_artifact(directory)
    target = get_target(manifest.target)
    tokenizer = AutoTokenizer.from_pretrained(directory / manifest.tokenizer.directory)
    reference = reference_model(directory, manifest)
    return target.verify(directory, manifest, reference, tokenizer)
