"""The detection runtime: letterboxing, head decoding, NMS against a brute-force reference, and the batcher."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from ingot.artifacts.manifest import DetectorInfo, Postprocess, Preprocess
from ingot.compile.verify.sample_inputs import synthetic_scene
from ingot.errors import ProgramShapeError, RequestError
from ingot.runtime.vision.decode import decode_heads
from ingot.runtime.vision.detector import Detector
from ingot.runtime.vision.letterbox import letterbox
from ingot.runtime.vision.nms import batched_nms
from ingot.runtime.vision.postprocess import DetectParams


def brute_force_nms(boxes: list[list[float]], scores: list[float], classes: list[int], threshold: float) -> list[int]:
    """The definition, one pair at a time."""

    def iou(a: list[float], b: list[float]) -> float:
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    kept: list[int] = []
    for i in order:
        if all(classes[k] != classes[i] or iou(boxes[k], boxes[i]) <= threshold for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    boxes = []
    for _ in range(300):
        x, y, w, h = rng.uniform(0, 200), rng.uniform(0, 200), rng.uniform(1, 80), rng.uniform(1, 80)
        boxes.append([x, y, x + w, y + h])
    scores = [rng.random() for _ in boxes]
    classes = [rng.randrange(4) for _ in boxes]
    threshold = rng.choice([0.3, 0.45, 0.7])
    expected = brute_force_nms(boxes, scores, classes, threshold)
    kept = batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.tensor(classes), threshold, max_keep=10_000)
    assert kept.tolist() == expected
    capped = batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.tensor(classes), threshold, max_keep=7)
    assert capped.tolist() == expected[:7]


def test_nms_keeps_overlapping_boxes_of_different_classes() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]])
    kept = batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]), 0.5, 100)
    assert kept.tolist() == [0, 1]


def test_letterbox_keeps_the_aspect_ratio_and_maps_boxes_back() -> None:
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    pixels, placement = letterbox(image, 320, pad_value=128)
    assert pixels.shape == (3, 320, 320)
    assert (placement.scale, placement.dx, placement.dy) == (1.6, 0, 80)
    assert pixels[:, 0, 0].tolist() == pytest.approx([128 / 255] * 3)  # padding
    assert pixels[:, 160, 160].tolist() == pytest.approx([1.0, 0.0, 0.0])  # the image
    box = torch.tensor([[16.0, 96.0, 160.0, 240.0]])  # input pixels
    assert placement.to_original(box).tolist() == [[10.0, 10.0, 100.0, 100.0]]
    assert placement.to_original(torch.tensor([[-50.0, 0.0, 999.0, 999.0]])).tolist() == [[0.0, 0.0, 200.0, 100.0]]


def info(classes: int = 2) -> DetectorInfo:
    return DetectorInfo(
        input_size=64, batch_sizes=[1], class_names=[f"c{i}" for i in range(classes)],
        anchors=[(10, 20), (30, 40), (50, 60)], anchor_masks=[[0, 1, 2]], strides=[32], scale_x_y=[1.2],
        preprocess=Preprocess(), postprocess=Postprocess(),
    )  # fmt: skip


def test_decode_follows_darknet_yolov4() -> None:
    head = torch.zeros(1, 3 * 7, 2, 2)  # one stride-32 head on a 64x64 input: 2x2 cells, 3 anchors, 2 classes
    p = head.view(1, 3, 7, 2, 2)
    p[0, 1, 0, 1, 0] = 2.0  # anchor 1, cell (x=0, y=1): tx
    p[0, 1, 2, 1, 0] = 0.5  # tw
    p[0, 1, 4, 1, 0] = 3.0  # objectness logit
    p[0, 1, 6, 1, 0] = 1.0  # class 1 logit
    boxes, scores = decode_heads([head], info())
    index = 1 * 4 + 1 * 2 + 0  # anchor-major, then row, then column
    sig = torch.sigmoid
    cx = float((sig(torch.tensor(2.0)) * 1.2 - 0.1 + 0) * 32)
    cy = (0.5 * 1.2 - 0.1 + 1) * 32
    w, h = 30 * float(torch.exp(torch.tensor(0.5))), 40.0
    assert boxes[0, index].tolist() == pytest.approx([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rel=1e-5)
    assert scores[0, index].tolist() == pytest.approx([float(sig(torch.tensor(3.0))) * 0.5,
                                                       float(sig(torch.tensor(3.0)) * sig(torch.tensor(1.0)))])  # fmt: skip
    assert boxes.shape == (1, 12, 4) and scores.shape == (1, 12, 2)


def test_out_of_range_thresholds_are_refused() -> None:
    with pytest.raises(RequestError, match="confidence_threshold must be between 0 and 1") as caught:
        DetectParams(confidence_threshold=1.5).resolve(info())
    assert caught.value.param == "confidence_threshold"
    with pytest.raises(RequestError, match="max_detections"):
        DetectParams(max_detections=0).resolve(info())


def test_detections_are_in_original_pixels_and_respect_the_parameters(detector: Detector) -> None:
    image = synthetic_scene(900, 500, seed=7)
    result = detector.detect(image, DetectParams(confidence_threshold=0.3, max_detections=20))
    assert result.image_size == (900, 500) and 0 < len(result.detections) <= 20
    scores = [d.score for d in result.detections]
    assert scores == sorted(scores, reverse=True) and min(scores) > 0.3
    for d in result.detections:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 <= x2 <= 900 and 0 <= y1 <= y2 <= 500
        assert d.class_name == detector.info.class_names[d.class_id]
    assert detector.detect(image, DetectParams(confidence_threshold=1.0)).detections == []


def test_waiting_images_are_batched_and_each_gets_its_own_answer(detector: Detector) -> None:
    images = [synthetic_scene(640, 480, seed=s) for s in range(5)]
    alone = [detector.detect(image).detections[:5] for image in images]
    futures = [detector.submit(image) for image in images]  # the first runs alone, the rest wait and batch up
    results = [f.result() for f in futures]
    assert max(r.batch_size for r in results) == 2
    for result, expected in zip(results, alone):
        got = result.detections[:5]
        assert [d.class_id for d in got] == [d.class_id for d in expected]
        for a, b in zip(got, expected):
            assert a.box == pytest.approx(b.box, abs=0.05) and a.score == pytest.approx(b.score, abs=1e-4)


def test_runner_refuses_wrong_shapes(detector: Detector) -> None:
    with pytest.raises(ProgramShapeError, match=r"float32 \[n, 3, 320, 320\]"):
        detector.runner.run(torch.zeros(1, 3, 416, 416))
    with pytest.raises(ProgramShapeError, match="1 to 2 images, not 3"):
        detector.runner.run(torch.zeros(3, 3, 320, 320))
