"""YOLOv4's published constants (yolov4.cfg): anchors, strides, the heads' x/y scaling and the COCO class names.

These go into the artifact's manifest, so the runtime decodes the heads without importing this package.
"""

from __future__ import annotations

NUM_CLASSES = 80
INPUT_SIZES = (320, 416, 512, 608, 640)

# Anchor (width, height) pairs in input pixels, smallest first; head i uses ANCHOR_MASKS[i].
ANCHORS = ((12, 16), (19, 36), (40, 28), (36, 75), (76, 55), (72, 146), (142, 110), (192, 243), (459, 401))
ANCHOR_MASKS = ((0, 1, 2), (3, 4, 5), (6, 7, 8))
STRIDES = (8, 16, 32)
SCALE_X_Y = (1.2, 1.1, 1.05)

# data/coco.names as Darknet ships it (its spellings: motorbike, aeroplane, sofa, ...).
COCO_NAMES = (
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa",
    "pottedplant", "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
