"""`ingot compile yolov4`: a verified detector artifact at 320 and 640, its ONNX export, its cache key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingot.artifacts.integrity import check_artifact
from ingot.compile.detector.kind import compile_detector
from ingot.compile.options import ONNX_FILE, DetectorOptions
from ingot.compile.pipeline import cache_key
from ingot.errors import OptionError
from ingot.models.yolov4.source import resolve_detector
from tests.conftest import YOLO_MAX_BATCH, run_cli, yolo_options


@pytest.mark.parametrize("size", [320, 640])
def test_verification_passes_at_the_smallest_and_largest_input(compiled_yolo, size: int) -> None:
    manifest = check_artifact(compiled_yolo(size).path)
    report = manifest.verification
    assert report.passed and report.input_size == size
    assert report.box_pcc >= 0.99 and report.confidence_pcc >= 0.99
    batches = {1, YOLO_MAX_BATCH} if size == 320 else {1}  # 640 builds the one-image program only
    assert set(report.programs) == {f"detect (batch {b})" for b in batches}
    assert min(report.programs.values()) >= 0.99


def test_manifest_describes_the_detector(compiled_yolo) -> None:
    manifest = check_artifact(compiled_yolo(320).path)
    assert manifest.kind == "detector" and manifest.kv_cache is None and manifest.tokenizer is None
    info = manifest.detector
    assert info.input_size == 320 and info.batch_sizes == [1, 2]
    assert len(info.class_names) == 80 and info.class_names[0] == "person" and info.class_names[-1] == "toothbrush"
    assert info.anchors[0] == (12, 16) and info.anchors[-1] == (459, 401) and info.strides == [8, 16, 32]
    # one image has a static program of its own; larger batches share a dynamic one
    assert [(p.name, p.batch, p.frozen) for p in manifest.programs] == [("detect_1", (1, 1), True), ("detect", (2, 2), True)]
    assert [o.shape for o in manifest.program("detect").outputs] == [[2, 255, 40, 40], [2, 255, 20, 20],
                                                                     [2, 255, 10, 10]]  # fmt: skip
    assert manifest.program("detect_1").inputs[0].shape == [1, 3, 320, 320]
    assert manifest.model.source_kind == "random"


def test_onnx_export_is_valid_and_matches_eager(compiled_yolo) -> None:
    import onnx

    result = compiled_yolo(320)
    onnx.checker.check_model(str(result.path / ONNX_FILE))
    batch = onnx.load(str(result.path / ONNX_FILE)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # any batch size, not the programs' buckets
    assert result.manifest.verification.onnx_pcc >= 0.999
    assert ONNX_FILE not in check_artifact(compiled_yolo(640).path).files  # only when asked for


def test_second_compile_is_a_cache_hit(compiled_yolo, session_store) -> None:
    first = compiled_yolo(640)
    again = compile_detector(
        resolve_detector("yolov4", None, random_weights=True),
        yolo_options(640),
        session_store,
        quiet=True,
    )
    assert again.cache_hit and again.key == first.key


def test_cache_key_follows_the_weights_file_and_the_options(tmp_path: Path) -> None:
    a, b = tmp_path / "a.weights", tmp_path / "b.weights"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    options = DetectorOptions(input_size=416)
    key = lambda weights, opts=options: cache_key(resolve_detector("yolov4", str(weights), False).digests(), opts)  # noqa: E731
    assert key(a) != key(b)
    assert key(a) != key(a, DetectorOptions(input_size=608))
    assert key(a) == key(a)


def test_bad_detector_options_are_refused() -> None:
    with pytest.raises(OptionError, match="--input-size: must be one of 320, 416, 512, 608, 640"):
        DetectorOptions.parse(input_size=300)
    with pytest.raises(OptionError, match="--emit"):
        DetectorOptions.parse(emit=("tflite",))


def test_cli_inspect_verify_ls_and_gc_handle_a_detector(compiled_yolo, session_store) -> None:
    result = compiled_yolo(320)
    cache = session_store.root
    inspected = run_cli("inspect", result.key, cache_dir=cache)
    assert inspected.returncode == 0 and "320x320 RGB, letterboxed" in inspected.stdout
    verified = run_cli("verify", result.key, cache_dir=cache)
    assert verified.returncode == 0, verified.stderr
    assert "boxes PCC" in verified.stdout and "ONNX" in verified.stdout and "passed" in verified.stdout
    listed = run_cli("ls", cache_dir=cache)
    assert "yolov4" in listed.stdout
    assert run_cli("gc", cache_dir=cache).returncode == 0
    assert check_artifact(result.path).kind == "detector"  # gc keeps a good artifact


def test_cli_refuses_missing_weights_and_foreign_options(tmp_path: Path) -> None:
    missing = run_cli("compile", "yolov4", cache_dir=tmp_path)
    assert missing.returncode == 1 and "needs trained weights" in missing.stderr
    assert "Traceback" not in missing.stderr
    foreign = run_cli("compile", "yolov4", "--random-weights", "--max-context", "512", cache_dir=tmp_path)
    assert foreign.returncode == 1 and "--max-context is an option for language models" in foreign.stderr
    buckets = run_cli("compile", "yolov4", "--random-weights", "--prefill-buckets", "16,32", cache_dir=tmp_path)
    assert buckets.returncode == 1 and "--prefill-buckets is an option for language models" in buckets.stderr
    key = run_cli("cache-key", "yolov4", "--random-weights", "--input-size", "640", cache_dir=tmp_path)
    assert key.returncode == 0 and len(key.stdout.strip()) == 24


def test_cpu_plans_a_static_program_for_one_image_and_a_dynamic_one_for_batches() -> None:
    from ingot.compile.cpu.target import CPU

    plans = CPU.detector_plan(DetectorOptions(input_size=320, max_batch=8))
    assert [(p.name, p.batch, p.frozen) for p in plans] == [("detect_1", (1, 1), True), ("detect", (2, 8), True)]
    assert [p.name for p in CPU.detector_plan(DetectorOptions(input_size=320, max_batch=1))] == ["detect_1"]
