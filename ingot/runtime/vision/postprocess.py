"""From decoded boxes and confidences to a request's detections: threshold, class-wise NMS, original pixels."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ingot.artifacts.manifest import DetectorInfo
from ingot.errors import RequestError
from ingot.runtime.vision.letterbox import Letterbox
from ingot.runtime.vision.nms import batched_nms


@dataclass(frozen=True)
class DetectParams:
    """A request's thresholds; ``None`` takes the artifact's default."""

    confidence_threshold: float | None = None
    iou_threshold: float | None = None
    max_detections: int | None = None

    def resolve(self, info: DetectorInfo) -> DetectParams:
        """The thresholds to use, checked: out-of-range values are a RequestError naming the parameter."""
        defaults = info.postprocess
        resolved = DetectParams(
            confidence_threshold=_pick(self.confidence_threshold, defaults.confidence_threshold),
            iou_threshold=_pick(self.iou_threshold, defaults.iou_threshold),
            max_detections=_pick(self.max_detections, defaults.max_detections),
        )
        for name in ("confidence_threshold", "iou_threshold"):
            if not 0 <= getattr(resolved, name) <= 1:
                raise RequestError(f"{name} must be between 0 and 1", param=name)
        if not 1 <= resolved.max_detections <= defaults.max_candidates:
            raise RequestError(f"max_detections must be between 1 and {defaults.max_candidates}", param="max_detections")
        return resolved


def _pick(value, default):
    return default if value is None else value


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the original image's pixels
    score: float
    class_id: int
    class_name: str


def select_detections(
    boxes: torch.Tensor, scores: torch.Tensor, placement: Letterbox, params: DetectParams, info: DetectorInfo
) -> list[Detection]:
    """boxes [N, 4] in input pixels and scores [N, C] of one image -> its detections, best first.

    Every (box, class) pair above the confidence threshold is a candidate (at most ``max_candidates``, the best);
    class-wise NMS then keeps up to ``max_detections``."""
    above = scores > params.confidence_threshold
    above &= torch.isfinite(boxes).all(-1, keepdim=True)  # exp() of a huge size logit: no box to report
    anchor, cls = torch.nonzero(above, as_tuple=True)
    confidence = scores[anchor, cls]
    limit = info.postprocess.max_candidates
    if len(confidence) > limit:
        best = confidence.topk(limit).indices
        anchor, cls, confidence = anchor[best], cls[best], confidence[best]
    candidates = boxes[anchor]
    keep = batched_nms(candidates, confidence, cls, params.iou_threshold, params.max_detections)
    mapped = placement.to_original(candidates[keep])
    return [
        Detection(box=tuple(round(v, 2) for v in box), score=round(score, 5), class_id=c, class_name=info.class_names[c])
        for box, score, c in zip(mapped.tolist(), confidence[keep].tolist(), cls[keep].tolist())
    ]
