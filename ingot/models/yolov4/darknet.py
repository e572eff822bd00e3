"""Darknet's weight file (``yolov4.weights``): a small header, then every [convolutional] layer's floats in
yolov4.cfg order, each as the batch norm's (bias, scale, mean, variance) or the conv bias, then the conv weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ingot.errors import ModelSourceError
from ingot.models.yolov4.network import ConvBN, YOLOv4


def header_size(major: int, minor: int) -> int:
    """Three int32 version fields, then ``seen``: an int64 since format 0.2, an int32 before."""
    return 20 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 16


def layer_floats(layer: ConvBN) -> int:
    conv = layer.conv[0]
    return conv.weight.numel() + conv.out_channels * (4 if len(layer.conv) > 1 else 1)


def load_darknet(model: YOLOv4, path: Path) -> None:
    """Fill ``model`` from a Darknet weight file; a file of another network (size mismatch) is refused."""
    data = path.read_bytes()
    if len(data) < 16:
        raise ModelSourceError(f"{path.name}: {len(data)} bytes is too short for a Darknet weight file")
    major, minor, _revision = np.frombuffer(data[:12], dtype="<i4")
    offset = header_size(int(major), int(minor))
    layers = model.conv_layers()
    expected = sum(map(layer_floats, layers))
    found, remainder = divmod(len(data) - offset, 4)
    if found != expected or remainder:
        raise ModelSourceError(
            f"{path.name}: holds {len(data) - offset} bytes of weights after its header, YOLOv4 (yolov4.cfg, "
            f"{model.num_classes} classes) needs {expected * 4}: not yolov4.weights (yolov4-tiny or a custom model?)"
        )
    floats = torch.from_numpy(np.frombuffer(data, dtype="<f4", offset=offset).copy())
    position = 0

    def take(target: torch.Tensor) -> None:
        nonlocal position
        count = target.numel()
        target.copy_(floats[position : position + count].view_as(target))
        position += count

    with torch.no_grad():
        for layer in layers:
            conv = layer.conv[0]
            if len(layer.conv) > 1:
                bn = layer.conv[1]
                for tensor in (bn.bias, bn.weight, bn.running_mean, bn.running_var):
                    take(tensor)
            else:
                take(conv.bias)
            take(conv.weight)


def save_darknet(model: YOLOv4, path: Path, seen: int = 0) -> None:
    """Write ``model`` as Darknet's format 0.2 weight file (what ``load_darknet`` and darknet itself read)."""
    parts = [np.array([0, 2, 5], dtype="<i4").tobytes(), np.array([seen], dtype="<i8").tobytes()]
    for layer in model.conv_layers():
        conv = layer.conv[0]
        if len(layer.conv) > 1:
            bn = layer.conv[1]
            tensors = [bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]
        else:
            tensors = [conv.bias, conv.weight]
        for tensor in tensors:
            parts.append(tensor.detach().numpy().astype("<f4").tobytes())
    path.write_bytes(b"".join(parts))
