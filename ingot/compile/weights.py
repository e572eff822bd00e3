"""The artifact's one weights file, in safetensors, shared by all its programs."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from ingot.artifacts.manifest import WeightsInfo


def save_weights(module: torch.nn.Module, path: Path) -> WeightsInfo:
    """Store each tensor once; a tied name (lm_head sharing the embedding) becomes an alias."""
    stored: dict[str, torch.Tensor] = {}
    by_storage: dict[int, str] = {}
    aliases: dict[str, str] = {}
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        owner = by_storage.get(tensor.data_ptr())
        if owner is not None and stored[owner].shape == tensor.shape:
            aliases[name] = owner
            continue
        by_storage[tensor.data_ptr()] = name
        stored[name] = tensor.detach().contiguous()
    save_file(stored, path)
    return WeightsInfo(file=path.name, aliases=aliases)
