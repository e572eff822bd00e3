"""Letterboxing: scale an image to fit the network's square input without distorting it, pad the rest, and map
boxes back to the original pixels afterwards."""

from __future__ import annotations

from dataclasses import dataclass

import numpy
import torch
from PIL import Image, ImageOps


@dataclass(frozen=True)
class Letterbox:
    """Where the image sits in the network input: input = original * scale + (dx, dy)."""

    scale: float
    dx: int
    dy: int
    width: int  # the original image's size
    height: int

    def to_original(self, boxes: torch.Tensor) -> torch.Tensor:
        """[N, 4] x1, y1, x2, y2 in input pixels -> original pixels, clipped to the image."""
        offset = boxes.new_tensor([self.dx, self.dy, self.dx, self.dy])
        mapped = (boxes - offset) / self.scale
        limits = boxes.new_tensor([self.width, self.height, self.width, self.height])
        return mapped.clamp(min=0).minimum(limits)


def letterbox(image: Image.Image, size: int, pad_value: int) -> tuple[torch.Tensor, Letterbox]:
    """The image as a [3, size, size] float RGB tensor in [0, 1] (EXIF rotation applied), and its placement."""
    image = ImageOps.exif_transpose(image).convert("RGB")
    width, height = image.size
    scale = min(size / width, size / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    dx, dy = (size - new_w) // 2, (size - new_h) // 2
    canvas = Image.new("RGB", (size, size), (pad_value,) * 3)
    canvas.paste(image.resize((new_w, new_h), Image.Resampling.BILINEAR), (dx, dy))
    # numpy, not torch: this runs on the caller's thread, which must not start an OpenMP pool (runtime/threads.py)
    pixels = torch.from_numpy(numpy.asarray(canvas, dtype=numpy.float32) / 255)
    return pixels.permute(2, 0, 1), Letterbox(scale, dx, dy, width, height)
