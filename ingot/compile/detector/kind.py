"""A detector (YOLOv4) as a kind of model for the build: its weights load into ingot's own network, each program
takes a batch of images, its artifact carries the decoding constants (and an ONNX export when asked), and its
verification runs the artifact against the eager float32 network, or on a device target predicts its accuracy
in the device's number formats.

This module is imported for a cache hit too, so torch and the runtime are imported inside the methods a build
calls, never at the top."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ingot.artifacts.manifest import (
    DetectionVerificationReport,
    DetectorInfo,
    Manifest,
    ModelInfo,
    Postprocess,
    Preprocess,
)
from ingot.artifacts.store import ArtifactStore
from ingot.compile.options import ONNX_FILE, DetectorOptions
from ingot.compile.pipeline import CapturedProgram, CompileResult, compile_artifact
from ingot.compile.plan import ProgramPlan, Target
from ingot.models.yolov4 import spec
from ingot.models.yolov4.source import DetectorSource

if TYPE_CHECKING:  # a type only: a cache hit imports no torch
    from ingot.models.yolov4.network import YOLOv4


def compile_detector(
    source: DetectorSource, options: DetectorOptions, store: ArtifactStore, quiet: bool = False
) -> CompileResult:
    """The artifact of the detector ``source`` (its weights file, or random weights)."""
    return compile_artifact(DetectorKind(source, source.digests(), options), store, quiet)


class DetectorKind:
    """What a detector brings to the build (see pipeline.ModelKind)."""

    name: Literal["detector"] = "detector"
    save_stage = "save weights"

    def __init__(self, source: DetectorSource, digests: dict[str, str], options: DetectorOptions) -> None:
        self.source, self.digests, self.options = source, digests, options
        self.load_stage = f"load {source.name} ({source.kind} weights)"
        self.model: YOLOv4 | None = None

    def plans(self, target: Target) -> list[ProgramPlan]:
        return target.detector_plan(self.options)

    def load(self) -> YOLOv4:
        from ingot.models.yolov4.source import load_detector

        self.model = load_detector(self.source, self.options.input_size)
        return self.model

    def capture(self, plan: ProgramPlan) -> CapturedProgram:
        from ingot.compile.detector.capture import capture_detector

        return capture_detector(self.model, plan, self.options.input_size)

    def exports(self) -> dict[str, Callable[[Path], None]]:
        return {"export ONNX": self._export_onnx} if "onnx" in self.options.emit else {}

    def _export_onnx(self, workdir: Path) -> None:
        """The network with a dynamic batch dimension (any batch, as ONNX users expect)."""
        from ingot.compile.detector.capture import export_detector
        from ingot.compile.detector.onnx_export import export_onnx

        size, largest = self.options.input_size, self.options.batch_sizes[-1]
        export_onnx(export_detector(self.model, (1, largest), size), workdir / ONNX_FILE)

    def manifest_fields(self, workdir: Path, target: Target) -> dict:
        weights_file = self.source.weights.name if self.source.weights else None
        return dict(
            model=ModelInfo(
                name=self.source.name,
                family="yolov4",
                architecture="YOLOv4",
                source_kind=self.source.kind,
                config={"num_classes": self.model.num_classes, "weights_file": weights_file},
                source_sha256=self.digests,
            ),
            detector=DetectorInfo(
                input_size=self.options.input_size,
                batch_sizes=self.options.batch_sizes,
                class_names=list(spec.COCO_NAMES),
                anchors=list(spec.ANCHORS),
                anchor_masks=[list(m) for m in spec.ANCHOR_MASKS],
                strides=list(spec.STRIDES),
                scale_x_y=list(spec.SCALE_X_Y),
                preprocess=Preprocess(),
                postprocess=Postprocess(),
            ),
        )

    def verify_stage(self, target: Target) -> str:
        if target.accuracy:
            return "verify against float32 eager"
        return f"predict accuracy in TT number formats ({target.detector_policy} policy)"

    def verify(self, target: Target, workdir: Path, manifest: Manifest) -> Manifest:
        """Run the artifact's programs against the eager float32 network; when they need a device, predict the
        network's accuracy in the target's number formats instead, recorded in the manifest's ``tt``."""
        if target.accuracy is None:
            from ingot.compile.verify.predicted_detector import predict_detector_accuracies

            predictions = predict_detector_accuracies(self.model, manifest, [target.detector_policy])
            return manifest.model_copy(update={"tt": manifest.tt.model_copy(update={"predicted": predictions})})
        from ingot.compile.verify.detector import verify_detector

        bar = target.accuracy
        onnx_file = workdir / ONNX_FILE if "onnx" in self.options.emit else None
        report = verify_detector(workdir, manifest, self.model, bar.min_detection_pcc, onnx_file, bar.min_onnx_pcc)
        return manifest.model_copy(update={"verification": report})

    def failure(self, report: DetectionVerificationReport) -> str:
        return (
            f"verification failed: box PCC {report.box_pcc:.6f}, confidence PCC {report.confidence_pcc:.6f} "
            f"(min {report.min_box_pcc}), programs {report.programs}, ONNX PCC {report.onnx_pcc}"
        )
