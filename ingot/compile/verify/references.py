"""The float32 references verification compares against, rebuilt from an artifact alone (its config and weights),
for `ingot verify` and for TT accuracy predictions."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from ingot.artifacts.manifest import Manifest, PackedLinear
from ingot.compile.cpu.packed_linears import unpack_linear_weight
from ingot.compile.llm.step_module import STEP_PREFIX
from ingot.errors import ArtifactError
from ingot.models.yolov4.network import YOLOv4

LLM_REFERENCE = "transformers eager float32"
DECODED_REFERENCE = "transformers eager float32 on the artifact's decoded weights"
DETECTOR_REFERENCE = "eager float32 PyTorch"


def reference_model(directory: Path, manifest: Manifest) -> PreTrainedModel:
    """The eager float32 transformers model with the artifact's own config and weights: the model's own float32
    weights for an fp32 artifact, the stored values decoded to float32 for one in a smaller format."""
    config_dict = dict(manifest.model.config)
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    weights = load_file(directory / manifest.weights.file)
    for alias, owner in manifest.weights.aliases.items():
        weights[alias] = weights[owner]
    for name, linears in manifest.weights.packed.items():
        weights.update(_unpacked(weights.pop(name), weights.pop(f"{name}_bias", None), linears))
    state = {name.removeprefix(STEP_PREFIX): tensor for name, tensor in weights.items()}
    if config.tie_word_embeddings and "lm_head.weight" in state:  # the programs read the embedding from the head
        state.setdefault("model.embed_tokens.weight", state["lm_head.weight"])
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise ArtifactError(f"{directory.name}: weights lack {missing[0]}")
    return model.eval()


def _unpacked(packed: torch.Tensor, bias: torch.Tensor | None, linears: PackedLinear) -> dict[str, torch.Tensor]:
    """The model's own weights (and biases) of linears stored packed together."""
    weights = unpack_linear_weight(packed, sum(linears.out_features), linears.format).split(linears.out_features)
    tensors = dict(zip(linears.weights, weights))
    if bias is not None:
        for name, part in zip(linears.biases, bias.split(linears.out_features)):
            if name is not None:
                tensors[name] = part
    return tensors


def detector_reference(directory: Path, manifest: Manifest) -> torch.nn.Module:
    """The eager float32 network rebuilt from the artifact's own weights (stored under the network's module names)."""
    reference = YOLOv4(num_classes=manifest.model.config["num_classes"])
    missing, unexpected = reference.load_state_dict(load_file(directory / manifest.weights.file), strict=False)
    if missing or unexpected:
        raise ArtifactError(f"{directory.name}: weights do not fit YOLOv4 ({(missing or unexpected)[0]})")
    return reference.eval()
