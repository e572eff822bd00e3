"""How verification compares a compiled model's outputs with its float32 reference's."""

from __future__ import annotations

import torch


def pcc(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two tensors, flattened: Tenstorrent's accuracy measure."""
    stacked = torch.stack([a.flatten().double(), b.flatten().double()])
    return float(torch.corrcoef(stacked)[0, 1])


def agreement(actual: torch.Tensor, expected: torch.Tensor) -> dict[str, float]:
    """Logits [tokens, vocab] against the reference's: PCC, max abs error, teacher-forced top-1/top-5 agreement
    (top-5: the reference's top token is among the five highest of `actual`)."""
    top1 = actual.argmax(-1) == expected.argmax(-1)
    top5 = (actual.topk(5, dim=-1).indices == expected.argmax(-1, keepdim=True)).any(-1)
    return dict(
        pcc=pcc(actual, expected),
        max_abs_error=float((actual - expected).abs().max()),
        top1_agreement=float(top1.float().mean()),
        top5_agreement=float(top5.float().mean()),
    )


def flatten_heads(heads: list[torch.Tensor]) -> torch.Tensor:
    """Every head map of a detector call as one vector, for one PCC over all of them."""
    return torch.cat([h.flatten() for h in heads])


def max_abs_error(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    """The largest difference between any pair of a detector's head maps."""
    return max(float((a - e).abs().max()) for a, e in zip(actual, expected))
