"""Decoding YOLO heads into boxes and per-class confidences, from the constants in the artifact's manifest."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ingot.artifacts.manifest import DetectorInfo


def decode_heads(heads: Sequence[torch.Tensor], info: DetectorInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """Head maps [B, 3 * (5 + C), h, w], one per stride -> boxes [B, N, 4] (x1, y1, x2, y2 in input pixels)
    and confidences [B, N, C] (objectness times class probability), N summed over heads, anchors and cells.

    Darknet's YOLOv4 decoding: centre = (sigmoid(t) * s - (s - 1) / 2 + cell) * stride with the head's
    scale_x_y s, size = exp(t) * anchor."""
    all_boxes, all_scores = [], []
    classes = len(info.class_names)
    for head, stride, mask, scale in zip(heads, info.strides, info.anchor_masks, info.scale_x_y, strict=True):
        batch, _, h, w = head.shape
        p = head.view(batch, len(mask), 5 + classes, h, w).permute(0, 1, 3, 4, 2)
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cells = torch.stack([xs, ys], dim=-1).to(head.dtype)
        centre = (p[..., :2].sigmoid() * scale - (scale - 1) / 2 + cells) * stride
        anchors = head.new_tensor([info.anchors[i] for i in mask]).view(1, len(mask), 1, 1, 2)
        size = p[..., 2:4].exp() * anchors
        all_boxes.append(torch.cat([centre - size / 2, centre + size / 2], dim=-1).reshape(batch, -1, 4))
        all_scores.append((p[..., 4:5].sigmoid() * p[..., 5:].sigmoid()).reshape(batch, -1, classes))
    return torch.cat(all_boxes, dim=1), torch.cat(all_scores, dim=1)
