"""A detector's TT-predicted accuracy: the float32 network with a format policy applied (tt/emulate.py), against
itself unchanged. Both networks see the letterboxed sample scenes the cpu verification uses; boxes and confidences
are compared after the runtime's own decoding, as tt-metal compares them (its `YOLOV4_BOXES_PCC` and
`YOLOV4_CONFS_PCC`). A TT detector's compile records it in the manifest; `ingot verify` runs it under any policy.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ingot.artifacts.manifest import Manifest, TtDetectionAcceptance, TtDetectionPrediction
from ingot.compile.tt.emulate import count_applied, predicted_detector
from ingot.compile.tt.policies import FormatPolicy, get_policy
from ingot.compile.verify.metrics import flatten_heads, max_abs_error, pcc
from ingot.compile.verify.references import DETECTOR_REFERENCE, detector_reference
from ingot.compile.verify.sample_inputs import sample_batch
from ingot.runtime.vision.decode import decode_heads

# tt-metal's models/demos/yolov4/common.py at commit 90b63baa: YOLOV4_BOXES_PCC, YOLOV4_CONFS_PCC and
# YOLOV4_BOXES_PCC_BLACKHOLE (its Blackhole test checks boxes only, at the lower bar).
TT_ACCEPTANCE = TtDetectionAcceptance(min_box_pcc=0.99, min_confidence_pcc=0.9, min_box_pcc_blackhole=0.96)


def predict_detector_accuracies(
    reference: nn.Module, manifest: Manifest, policies: list[str | FormatPolicy]
) -> list[TtDetectionPrediction]:
    """One prediction per policy on the verification's sample images; the reference runs once."""
    info = manifest.detector
    images = sample_batch(manifest)
    with torch.no_grad():
        expected = list(reference(images))
    ref_boxes, ref_confidences = decode_heads(expected, info)
    predictions = []
    for policy in [get_policy(p, "detector") if isinstance(p, str) else p for p in policies]:
        model, applied = predicted_detector(reference, policy)
        with torch.no_grad():
            actual = list(model(images))
        del model
        boxes, confidences = decode_heads(actual, info)
        box_pcc, confidence_pcc = pcc(boxes, ref_boxes), pcc(confidences, ref_confidences)
        meets = box_pcc >= TT_ACCEPTANCE.min_box_pcc and confidence_pcc >= TT_ACCEPTANCE.min_confidence_pcc
        predictions.append(
            TtDetectionPrediction(
                policy=policy.name,
                description=policy.description,
                source=policy.source,
                reference=DETECTOR_REFERENCE,
                images=len(images),
                input_size=info.input_size,
                box_pcc=box_pcc,
                confidence_pcc=confidence_pcc,
                head_pcc=pcc(flatten_heads(actual), flatten_heads(expected)),
                max_abs_error=max_abs_error(actual, expected),
                tenstorrent=TT_ACCEPTANCE,
                meets_tt_pcc=meets,
                applied=count_applied(applied),
            )
        )
    return predictions


def predict_tt_detector_accuracies(
    artifact_dir: Path, manifest: Manifest, policies: list[str | FormatPolicy]
) -> list[TtDetectionPrediction]:
    """`ingot verify`'s TT numerics for a detector: the float32 reference rebuilt from the artifact's weights."""
    return predict_detector_accuracies(detector_reference(artifact_dir, manifest), manifest, policies)
