"""``ingot compile yolov4``: weights -> cache key -> (on a miss) capture, lower, optionally export ONNX, verify,
publish. The same store, key scheme, target interface (plan, lower_all, verify) and artifact layout as the
language models: cpu plans one program with a dynamic batch, a Tenstorrent target one static program per batch
size, and a Tenstorrent artifact's verification is its accuracy predicted in the device's number formats."""

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

ONNX_FILE = "model.onnx"


def compile_detector(
    source: DetectorSource, options: DetectorOptions, store: ArtifactStore, quiet: bool = False
) -> CompileResult:
    digests = source.digests()
    key = cache_key(digests, options)
    return build_once(store, key, lambda workdir: _build(source, digests, options, key, workdir, store.root, quiet))


def _build(
    source: DetectorSource,
    digests: dict[str, str],
    options: DetectorOptions,
    key: str,
    workdir: Path,
    cache_root: Path,
    quiet: bool,
) -> Manifest:
    from ingot.artifacts.manifest import DetectorInfo, ModelInfo, Postprocess, Preprocess, ProgramSpec, TensorSpec
    from ingot.compile import kernels
    from ingot.compile.onnx_export import OUTPUT_NAMES, export_onnx
    from ingot.compile.targets import get_target
    from ingot.compile.weights import save_weights
    from ingot.models.yolov4 import spec
    from ingot.models.yolov4.source import load_detector

    target = get_target(options.target)
    plans = target.detector_plan(options)
    size, batches = options.input_size, options.batch_sizes
    # load, (native library,) captures, lowering, save, verify (and the ONNX export)
    stages = 4 + target.native_library + len(plans) + ("onnx" in options.emit)
    with StageProgress(stages, quiet=quiet) as progress:
        with progress.stage(f"load {source.name} ({source.kind} weights)"):
            model = load_detector(source, size)
        libraries = []
        if target.native_library:
            with progress.stage("build ingot's native library"):
                libraries = kernels.add_to_artifact(workdir)
        captured = []
        for plan in plans:
            with progress.stage(f"capture {plan.name}"):
                captured.append((plan, _capture(model, plan.batch, size)))
        (workdir / "programs").mkdir()
        lowered = target.lower_all(captured, workdir / "programs", options, cache_root, progress)
        onnx_file = None
        if "onnx" in options.emit:
            with progress.stage("export ONNX"):
                onnx_file = workdir / ONNX_FILE
                export_onnx(_capture(model, (1, batches[-1]), size), onnx_file)  # any batch, as ONNX users expect
        del captured
        with progress.stage("save weights"):
            weights = save_weights(model, workdir / "weights.safetensors")
            channels = 3 * (5 + model.num_classes)
            programs = []
            for plan in plans:
                batch = "batch" if plan.batch[0] != plan.batch[1] else plan.batch[0]
                filename, target_info = lowered[plan.name]
                outputs = [
                    TensorSpec(name=name, dtype="float32", shape=[batch, channels, size // stride, size // stride])
                    for name, stride in zip(OUTPUT_NAMES, spec.STRIDES)
                ]
                programs.append(
                    ProgramSpec(
                        name=plan.name, kind="detect", file=filename, batch=plan.batch, frozen=plan.frozen,
                        kernels=libraries,
                        inputs=[TensorSpec(name="images", dtype="float32", shape=[batch, 3, size, size])],
                        outputs=outputs, tt=target_info,
                    )
                )
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
                programs=programs,
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
                tt=target.manifest_info(),
            )
        with progress.stage(target.detector_verify_stage):
            manifest = target.verify_detector(workdir, manifest, model, onnx_file)
    report = manifest.verification
    if report is not None and not report.passed:
        raise VerificationError(
            f"verification failed: box PCC {report.box_pcc:.6f}, confidence PCC {report.confidence_pcc:.6f} "
            f"(min {report.min_box_pcc}), programs {report.programs}, ONNX PCC {report.onnx_pcc}"
        )
    return publish(workdir, manifest, report)


def _capture(model, batch: tuple[int, int], size: int):
    """torch.export of the network for an (inclusive) batch range: a dynamic batch dimension when it is a range."""
    import torch
    from torch.export import Dim

    low, high = batch
    example = torch.zeros(min(2, high) if low != high else low, 3, size, size)
    dynamic = {"images": {0: Dim("batch", min=low, max=high)}} if low != high else None
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=dynamic)
