"""The model families ingot compiles, recognised from a transformers config."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

from ingot.errors import UnsupportedModelError


@dataclass(frozen=True)
class Family:
    name: str
    architecture: str
    notes: str


FAMILIES = {
    "llama": Family("llama", "LlamaForCausalLM", "Llama 2/3, SmolLM2; tied or untied embeddings"),
    "qwen2": Family("qwen2", "Qwen2ForCausalLM", "q/k/v projections with bias"),
    "qwen3": Family("qwen3", "Qwen3ForCausalLM", "RMS norm on q and k"),
}
SUPPORTED = ", ".join(f.architecture for f in FAMILIES.values())


def family_of(config: PretrainedConfig) -> Family:
    """The family of a config, or an error naming what ingot supports."""
    family = FAMILIES.get(config.model_type)
    if family is None:
        names = ", ".join(getattr(config, "architectures", None) or [config.model_type])
        raise UnsupportedModelError(f"unsupported architecture {names}; ingot compiles {SUPPORTED}")
    if getattr(config, "use_sliding_window", False):
        raise UnsupportedModelError(f"{family.architecture} with sliding-window attention is not supported")
    return family
