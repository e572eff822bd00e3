"""The artifact's one weights file, in safetensors, shared by all its programs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from ingot.artifacts.manifest import PackedLinear, WeightsInfo
from ingot.artifacts.weight_format import WeightFormat


@dataclass
class ProgramWeights:
    """What a target's programs read: tensors by the names the programs use, and which of them are packed linears."""

    tensors: dict[str, torch.Tensor]
    packed: dict[str, PackedLinear] = field(default_factory=dict)
    rounded: dict[str, WeightFormat] = field(default_factory=dict)  # float32 tensors holding a format's values


def save_weights(weights: ProgramWeights, path: Path) -> WeightsInfo:
    """Store each tensor once; a name that shares another's tensor (lm_head tied to the embedding) becomes an
    alias."""
    tensors = weights.tensors
    stored: dict[str, torch.Tensor] = {}
    by_storage: dict[tuple[int, tuple[int, ...]], str] = {}
    aliases: dict[str, str] = {}
    for name, tensor in tensors.items():
        owner = by_storage.setdefault((tensor.data_ptr(), tuple(tensor.shape)), name)
        if owner != name:
            aliases[name] = owner
            continue
        stored[name] = tensor.contiguous()
    save_file(stored, path)
    return WeightsInfo(file=path.name, aliases=aliases, packed=weights.packed, rounded=weights.rounded)


def named_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``module`` by name, tied names included."""
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    return {name: tensor.detach() for name, tensor in named}
