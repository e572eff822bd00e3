"""Class-wise non-maximum suppression: exact greedy NMS, each kept box's IoUs against the rest in one vectorised
step, so the cost is (boxes kept) x (candidates), never the full pairwise matrix."""

from __future__ import annotations

import numpy as np
import torch


def _iou_one_to_many(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    top_left = np.maximum(box[:2], others[:, :2])
    bottom_right = np.minimum(box[2:], others[:, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=1)
    area = lambda b: np.clip(b[..., 2:] - b[..., :2], 0, None).prod(axis=-1)  # noqa: E731
    union = area(box) + area(others) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float, max_keep: int
) -> torch.Tensor:
    """Indices of the boxes kept, best first: a box is dropped when a better-scoring box of its class overlaps it
    by more than ``iou_threshold``. Boxes of different classes never suppress each other: each class is shifted
    to its own region of the plane before IoUs are taken."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    order = scores.argsort(descending=True, stable=True)
    span = float(boxes.max() - boxes.min()) + 1
    shifted = (boxes[order].double() + span * classes[order].double()[:, None]).numpy()
    alive = np.ones(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) == max_keep:
            break
        alive[i + 1 :] &= _iou_one_to_many(shifted[i], shifted[i + 1 :]) <= iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]
