"""What ``ingot compile yolov4 --weights PATH`` names: the network and the weight file that fills it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ingot.digest import sha256_file, sha256_files
from ingot.errors import ModelSourceError

DETECTOR_MODELS = ("yolov4",)
DARKNET_SUFFIXES = (".weights",)
PORT_SUFFIXES = (".pth", ".pt", ".safetensors")
RANDOM_SEED = 0


@dataclass(frozen=True)
class DetectorSource:
    """A detector and its weights; ``weights`` is None for seeded random weights (tests, benchmarks)."""

    name: str
    weights: Path | None

    @property
    def kind(self) -> Literal["darknet", "pytorch", "random"]:
        if self.weights is None:
            return "random"
        return "darknet" if self.weights.suffix in DARKNET_SUFFIXES else "pytorch"

    def digests(self) -> dict[str, str]:
        """sha256 of the weights and of the network's code (ingot's own, unlike the language models' modeling
        code, which the transformers version in the toolchain pins): a change to either is a different artifact."""
        package = Path(__file__).parent
        return {
            "weights": sha256_file(self.weights) if self.weights else f"random-seed-{RANDOM_SEED}",
            "network": sha256_files(package.glob("*.py"), package),
        }


def is_detector(model: str) -> bool:
    """Whether ``model`` is a built-in detector's name; ``./yolov4`` is a path, never the detector."""
    return model in DETECTOR_MODELS


def resolve_detector(model: str, weights: str | None, random_weights: bool) -> DetectorSource:
    """Refuse a compile that would silently produce a detector that detects nothing: weights, or say they're random."""
    if model not in DETECTOR_MODELS:
        raise ModelSourceError(f"{model}: not a detection model ({', '.join(DETECTOR_MODELS)})")
    if weights is None:
        if not random_weights:
            raise ModelSourceError(
                f"{model} needs trained weights: --weights yolov4.weights (Darknet, from AlexeyAB/darknet's "
                "releases) or --weights yolov4.pth (the pytorch-YOLOv4 port); --random-weights compiles random ones"
            )
        return DetectorSource(model, None)
    if random_weights:
        raise ModelSourceError("--weights and --random-weights exclude each other")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelSourceError(f"{weights}: no such weights file")
    if path.suffix not in DARKNET_SUFFIXES + PORT_SUFFIXES:
        known = ", ".join(DARKNET_SUFFIXES + PORT_SUFFIXES)
        raise ModelSourceError(f"{path.name}: unknown weights format (expected one of {known})")
    return DetectorSource(model, path.resolve())


def load_detector(source: DetectorSource, input_size: int):
    """The float32 eager network with the source's weights (random ones are calibrated at ``input_size``)."""
    from ingot.models.yolov4.darknet import load_darknet
    from ingot.models.yolov4.init import randomize
    from ingot.models.yolov4.network import YOLOv4
    from ingot.models.yolov4.port import load_port

    model = YOLOv4()
    if source.kind == "random":
        randomize(model, input_size, seed=RANDOM_SEED)
    elif source.kind == "darknet":
        load_darknet(model, source.weights)
    else:
        load_port(model, source.weights)
    return model.eval()
