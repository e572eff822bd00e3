"""`ingot detect`: objects in image files, with a detector artifact, printed and optionally drawn."""

from __future__ import annotations

import argparse

from ingot.cli.arguments import add_command
from ingot.cli.locate import find_artifact, open_store
from ingot.cli.printing import out, print_detections
from ingot.errors import IngotError


def add_parsers(commands: argparse._SubParsersAction, cache_dir: argparse.ArgumentParser) -> None:
    sub = add_command(
        commands, "detect", cmd_detect, "detect objects in images with a detector artifact (e.g. yolov4)", [cache_dir]
    )
    sub.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG, PNG, WebP, ... files")
    sub.add_argument("--model", default="yolov4", help="artifact key, prefix or path, or yolov4 (its newest artifact)")
    sub.add_argument("--out", help="write the image with the detections drawn (a directory for several images)")
    sub.add_argument("--confidence-threshold", type=float, help="minimum score (default 0.25)")
    sub.add_argument("--iou-threshold", type=float, help="NMS overlap above which a weaker box is dropped (default 0.45)")
    sub.add_argument("--max-detections", type=int, help="most detections per image (default 100)")
    sub.add_argument("--json", action="store_true", help="print the detections as JSON")


def cmd_detect(args: argparse.Namespace) -> None:
    """Detect objects in each image with a detector artifact; print them, and draw them with --out."""
    import json
    from pathlib import Path

    from PIL import Image

    from ingot.artifacts.integrity import check_artifact
    from ingot.runtime.vision.annotate import annotate
    from ingot.runtime.vision.detector import Detector
    from ingot.runtime.vision.postprocess import DetectParams

    out_dir = Path(args.out) if args.out and len(args.images) > 1 else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise IngotError(f"--out {args.out}: with several images, --out is a directory")
    images = []
    for name in args.images:
        try:
            image = Image.open(name)
            image.load()  # decoded now: a truncated file opens fine and fails only here
        except (OSError, Image.DecompressionBombError):  # UnidentifiedImageError is an OSError
            raise IngotError(f"{name}: not an image (or unreadable)") from None
        images.append((Path(name), image))
    path = find_artifact(open_store(args), args.model)
    detector = Detector(path, check_artifact(path))
    try:
        params = DetectParams(args.confidence_threshold, args.iou_threshold, args.max_detections)
        results = [detector.submit(image, params) for _, image in images]  # one batch where they fit
        results = [future.result() for future in results]
    finally:
        detector.shutdown()
    report = []
    for (name, image), result in zip(images, results):
        report.append({"image": str(name), "image_size": list(result.image_size),
                       "detections": [vars(d) | {"box": list(d.box)} for d in result.detections]})  # fmt: skip
        if not args.json:
            print_detections(name, result)
        if args.out:
            target = out_dir / f"{name.stem}.annotated.png" if out_dir else Path(args.out)
            target.parent.mkdir(parents=True, exist_ok=True)
            annotate(image, result.detections).save(target)
            if not args.json:
                out.print(f"wrote {target}")
    if args.json:
        print(json.dumps(report))
