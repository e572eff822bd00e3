"""Deterministic sample images for verifying detectors: synthetic scenes of shapes over gradients, in the sizes
and aspect ratios photos come in, drawn with Pillow from a fixed seed (no image files to ship or trust)."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

SIZES = ((640, 480), (375, 500), (800, 450), (512, 512))


def synthetic_scene(width: int, height: int, seed: int) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height))
    top, bottom = [rng.randrange(256) for _ in range(3)], [rng.randrange(256) for _ in range(3)]
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(1, height - 1)
        draw.line([(0, y), (width, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)))
    for _ in range(rng.randint(6, 12)):
        x1, y1 = rng.randrange(width), rng.randrange(height)
        x2, y2 = x1 + rng.randint(10, width // 2), y1 + rng.randint(10, height // 2)
        color = tuple(rng.randrange(256) for _ in range(3))
        shape = rng.choice(("rectangle", "ellipse", "polygon"))
        if shape == "rectangle":
            draw.rectangle([x1, y1, x2, y2], fill=color)
        elif shape == "ellipse":
            draw.ellipse([x1, y1, x2, y2], fill=color)
        else:
            draw.polygon([(x1, y2), ((x1 + x2) // 2, y1), (x2, y2)], fill=color)
    return image


def sample_images(count: int) -> list[Image.Image]:
    return [synthetic_scene(*SIZES[i % len(SIZES)], seed=i) for i in range(count)]
