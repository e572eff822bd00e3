"""State dicts of the widely used PyTorch port (Tianxiaomo/pytorch-YOLOv4, ``models.Yolov4``), whose module names
ingot's network shares. ``.pth``/``.pt`` files are read with torch's weights-only unpickler (no code runs);
``.safetensors`` files as they are."""

from __future__ import annotations

from pathlib import Path

import torch

from ingot.errors import ModelSourceError
from ingot.models.yolov4.network import YOLOv4

OPTIONAL = "num_batches_tracked"  # a training counter; some exports drop it


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a safe checkpoint
        raise ModelSourceError(f"{path.name}: not a PyTorch state dict ({str(error).splitlines()[0]})") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelSourceError(f"{path.name}: not a state dict of tensors")
    return {name.removeprefix("module."): tensor for name, tensor in state.items()}  # DataParallel's prefix


def load_port(model: YOLOv4, path: Path) -> None:
    """Fill ``model`` from the port's state dict; missing, unexpected or mis-shaped tensors are refused by name."""
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL)]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        detail = f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which YOLOv4 has not"
        count = f" ({len(missing)} missing, {len(unexpected)} unexpected)"
        raise ModelSourceError(f"{path.name}: not a YOLOv4 state dict of the pytorch-YOLOv4 port: {detail}{count}")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ModelSourceError(
                f"{path.name}: {name} has shape {list(tensor.shape)}, YOLOv4 ({model.num_classes} classes) "
                f"needs {list(expected[name].shape)}"
            )
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
