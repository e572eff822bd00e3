"""Drawing detections onto a copy of an image: a box per object, labelled with its class and score."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from ingot.runtime.vision.postprocess import Detection


def class_color(class_id: int) -> tuple[int, int, int]:
    """A bright color per class, the same on every run (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((class_id * 0.618034) % 1.0, 0.85, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def annotate(image: Image.Image, detections: Sequence[Detection]) -> Image.Image:
    annotated = image.convert("RGB")  # a copy, in a mode every color can be drawn in
    draw = ImageDraw.Draw(annotated)
    width = max(2, round(min(annotated.size) / 200))
    font = ImageFont.load_default(size=max(12, round(min(annotated.size) / 40)))
    for detection in reversed(detections):  # the best drawn last, on top
        color = class_color(detection.class_id)
        x1, y1, x2, y2 = detection.box
        draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
        label = f"{detection.class_name} {detection.score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), label, font=font)
        shift = bottom - top + 2 if y1 - (bottom - top) - 2 >= 0 else 0  # above the box when it fits
        draw.rectangle([left, top - shift, right + 2, bottom - shift], fill=color)
        draw.text((x1 + 1, y1 - shift), label, fill=(0, 0, 0), font=font)
    return annotated
