"""The fixed inputs every verification runs: a text for language models, and for detectors synthetic scenes of
shapes over gradients, in the sizes and aspect ratios photos come in, drawn with Pillow from a fixed seed (no image
files to ship or trust)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image, ImageDraw
from ingot.artifacts.manifest import Manifest
from ingot.runtime.vision.letterbox import letterbox

if TYPE_CHECKING:  # a type only: detector verification needs no transformers
    from transformers import PreTrainedTokenizerBase

TEXT = (Path(__file__).parent / "verify_text.txt").read_text()
NUM_TOKENS = 320
SIZES = ((640, 480), (375, 500), (800, 450), (512, 512))
NUM_IMAGES = 2


def verification_tokens(tokenizer: PreTrainedTokenizerBase, max_context: int) -> list[int]:
    """The fixed text every language-model verification runs, as token ids."""
    return tokenizer(TEXT, add_special_tokens=False).input_ids[: min(NUM_TOKENS, max_context)]


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


def sample_batch(manifest: Manifest, count: int = NUM_IMAGES) -> torch.Tensor:
    """``count`` scenes letterboxed into the detector's input, as serving letterboxes them."""
    info = manifest.detector
    scenes = [synthetic_scene(*SIZES[i % len(SIZES)], seed=i) for i in range(count)]
    return torch.stack([letterbox(image, info.input_size, info.preprocess.pad_value)[0] for image in scenes])
