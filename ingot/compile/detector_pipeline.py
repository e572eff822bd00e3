"""``ingot compile yolov4``: weights -> cache key -> (on a miss) capture, lower, optionally export ONNX, verify,
publish. The same store, key scheme, lowering and artifact layout as the language models."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from ingot.artifacts.manifest import Manifest
from ingot.artifacts.store import ArtifactStore
from ingot.artifacts.toolchain import toolchain_versions
from ingot.compile.detector_options import DetectorOptions
from ingot.compile.pipeline import CompileResult, build_once, cache_key, publish
from ingot.errors import VerificationError
from ingot.models.yolov4.source import DetectorSource
from ingot.progress import StageProgress

PROGRAM = "detect"
ONNX_FILE = "model.onnx"


def compile_detector(
    source: DetectorSource, options: DetectorOptions, store: ArtifactStore, quiet: bool = False
) -> CompileResult:
    digests = source.digests()
    key = cache_key(digests, options)
    return build_once(store, key, lambda workdir: _build(source, digests, options, key, workdir, quiet))


def _build(
    source: DetectorSource, digests: dict[str, str], options: DetectorOptions, key: str, workdir: Path, quiet: bool
) -> Manifest:
    import torch
    from torch.export import Dim

    from ingot.artifacts.manifest import DetectorInfo, ModelInfo, Postprocess, Preprocess, ProgramSpec, TensorSpec
    from ingot.compile.detector_verify import verify_detector
    from ingot.compile.onnx_export import OUTPUT_NAMES, export_onnx
    from ingot.compile.targets import get_target
    from ingot.compile.weights import save_weights
    from ingot.models.yolov4 import spec
    from ingot.models.yolov4.source import load_detector

    target = get_target(options.target)
    size, batches = options.input_size, options.batch_sizes
    stages = 5 + ("onnx" in options.emit)
    with StageProgress(stages, quiet=quiet) as progress:
        with progress.stage(f"load {source.name} ({source.kind} weights)"):
            model = load_detector(source, size)
        with progress.stage("capture detect"):
            example = torch.zeros(min(2, batches[-1]), 3, size, size)
            dynamic = {"images": {0: Dim("batch", min=1, max=batches[-1])}} if batches[-1] > 1 else None
            with torch.no_grad():
                exported = torch.export.export(model, (example,), dynamic_shapes=dynamic)
        filename = f"programs/{PROGRAM}{target.program_suffix}"
        with progress.stage(f"lower detect ({target.name})"):
            (workdir / "programs").mkdir()
            target.lower(exported, workdir / filename, freeze=True)
        onnx_file = None
        if "onnx" in options.emit:
            with progress.stage("export ONNX"):
                onnx_file = workdir / ONNX_FILE
                export_onnx(exported, onnx_file)
        with progress.stage("save weights"):
            weights = save_weights(model, workdir / "weights.safetensors")
            channels = 3 * (5 + model.num_classes)
            batch = "batch" if batches[-1] > 1 else 1
            outputs = [
                TensorSpec(name=name, dtype="float32", shape=[batch, channels, size // stride, size // stride])
                for name, stride in zip(OUTPUT_NAMES, spec.STRIDES)
            ]
            manifest = Manifest(
                kind="detector",
                key=key,
                target=target.name,
                created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                model=ModelInfo(
                    name=source.name,
                    family="yolov4",
                    architecture="YOLOv4",
                    source_kind=source.kind,
                    config={"num_classes": model.num_classes, "weights_file": source.weights.name if source.weights else None},
                    source_sha256=digests,
                ),
                options=options.model_dump(mode="json"),
                toolchain=toolchain_versions(),
                programs=[
                    ProgramSpec(
                        name=PROGRAM, kind="detect", file=filename, batch=(1, batches[-1]), frozen=True,
                        inputs=[TensorSpec(name="images", dtype="float32", shape=[batch, 3, size, size])],
                        outputs=outputs,
                    )
                ],
                weights=weights,
                detector=DetectorInfo(
                    input_size=size,
                    batch_sizes=batches,
                    class_names=list(spec.COCO_NAMES),
                    anchors=list(spec.ANCHORS),
                    anchor_masks=[list(m) for m in spec.ANCHOR_MASKS],
                    strides=list(spec.STRIDES),
                    scale_x_y=list(spec.SCALE_X_Y),
                    preprocess=Preprocess(),
                    postprocess=Postprocess(),
                ),
            )
        with progress.stage("verify against float32 eager"):
            report = verify_detector(
                workdir, manifest, model, target.min_detection_pcc, onnx_file, target.min_onnx_pcc
            )
    if not report.passed:
        raise VerificationError(
            f"verification failed: box PCC {report.box_pcc:.6f}, confidence PCC {report.confidence_pcc:.6f} "
            f"(min {report.min_box_pcc}), programs {report.programs}, ONNX PCC {report.onnx_pcc}"
        )
    return publish(workdir, manifest, report)
