"""Class-wise non-maximum suppression: greedy, exact, with the pairwise IoUs computed in one vectorised step."""

from __future__ import annotations

import numpy as np
import torch


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, 4] x [M, 4] xyxy -> [N, M] intersection over union (0 for empty boxes)."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area = lambda boxes: (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float, max_keep: int
) -> torch.Tensor:
    """Indices of the boxes kept, best first: a box is dropped when a better-scoring box of its class overlaps it
    by more than ``iou_threshold``. Boxes of different classes never suppress each other: each class is shifted
    to its own region of the plane before the IoUs are taken."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    order = scores.argsort(descending=True, stable=True)
    shift = (boxes.max() - boxes.min() + 1) * classes[order].to(boxes.dtype)
    shifted = boxes[order] + shift[:, None]
    overlaps = (box_iou(shifted, shifted) > iou_threshold).numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == max_keep:
            break
        suppressed |= overlaps[i]
    return order[torch.tensor(keep, dtype=torch.long)]
