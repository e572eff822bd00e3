"""YOLOv4 lowered for a Blackhole p150: one static program per batch size, its predicted accuracy in TT's number
formats, and how inspect, verify, serve and detect treat the artifact."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from PIL import Image

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.manifest import MANIFEST_NAME, Manifest
from ingot.artifacts.store import ArtifactStore
from ingot.compile.detector.kind import compile_detector
from ingot.compile.options import DetectorOptions
from ingot.compile.pipeline import cache_key
from ingot.compile.tt.plugin import DESCRIPTORS
from ingot.digest import sha256_file
from ingot.errors import ArtifactError, OptionError
from ingot.models.yolov4.source import resolve_detector
from ingot.runtime.vision.detector import Detector
from tests.compile.tt.conftest import TT_YOLO_OPTIONS
from tests.conftest import run_cli
from tests.test_cli import assert_one_line_error


def test_each_batch_size_lowers_to_its_own_ttnn_program(tt_yolo):
    manifest = check_artifact(tt_yolo.path)  # every file recorded with its sha256
    assert manifest.kind == "detector" and manifest.target == "p150"
    assert [p.name for p in manifest.programs] == ["detect_1", "detect_2"]
    assert manifest.detector.batch_sizes == [1, 2]
    for program, batch in zip(manifest.programs, (1, 2)):
        tt = program.tt
        assert tt.status == "lowered" and not tt.unlowered_ops
        assert program.batch == (batch, batch) and program.file == f"programs/detect_{batch}.ttnn"
        assert (tt_yolo.path / program.file).stat().st_size > 0
        assert all((tt_yolo.path / dump).is_file() for dump in tt.dumps)
        assert tt.ttnn_ops["ttnn.conv2d"] == 110  # every convolution of YOLOv4
        assert {"ttnn.mish", "ttnn.max_pool2d", "ttnn.concat"} <= set(tt.ttnn_ops)
        assert [t.shape for t in tt.inputs] == [[batch, 3, 320, 320]]
        assert [t.shape for t in tt.outputs] == [[batch, 255, s, s] for s in (40, 20, 10)]
        assert tt.toolchain["system_descriptor_sha256"] == sha256_file(DESCRIPTORS["p150"])
    assert manifest.verification is None and "tt-metal" in manifest.tt.device_verification


def test_the_compile_records_predicted_accuracy_under_the_yolov4_policy(tt_yolo):
    [prediction] = check_artifact(tt_yolo.path).tt.predicted
    assert prediction.policy == "yolov4" and "tt-metal" in prediction.source
    assert (prediction.images, prediction.input_size) == (2, 320)
    assert -1 <= prediction.box_pcc <= 1 and -1 <= prediction.confidence_pcc <= 1
    acceptance = prediction.tenstorrent
    assert (acceptance.min_box_pcc, acceptance.min_confidence_pcc) == (0.99, 0.9)
    assert acceptance.min_box_pcc_blackhole == 0.96
    assert prediction.meets_tt_pcc == (prediction.box_pcc >= 0.99 and prediction.confidence_pcc >= 0.9)
    # every convolution's (batch-norm folded) weight in bfloat8_b, its input and output and every layer's output bf16
    assert prediction.applied == {"weight bfloat8_b": 110, "input bfloat16": 110, "output bfloat16": 220}


def test_a_second_compile_is_a_cache_hit(tt_yolo, session_store):
    source = resolve_detector("yolov4", None, random_weights=True)
    again = compile_detector(source, DetectorOptions.parse(**TT_YOLO_OPTIONS), session_store, quiet=True)
    assert again.cache_hit and again.key == tt_yolo.key


def test_cache_key_covers_the_target_and_optimization_level():
    digests = resolve_detector("yolov4", None, random_weights=True).digests()
    tt = cache_key(digests, DetectorOptions.parse(**TT_YOLO_OPTIONS))
    assert tt != cache_key(digests, DetectorOptions.parse(input_size=320, max_batch=2))
    assert tt != cache_key(digests, DetectorOptions.parse(**TT_YOLO_OPTIONS, optimization_level=1))


def test_tt_only_and_cpu_only_detector_options_are_refused():
    with pytest.raises(OptionError, match="--emit onnx applies to the cpu target"):
        DetectorOptions.parse(target="p150", emit=("onnx",))
    with pytest.raises(OptionError, match="not cpu"):
        DetectorOptions.parse(allow_cpu_fallback=True)


def test_inspect_shows_the_ttnn_ops_and_the_prediction(tt_yolo, session_store):
    result = run_cli("inspect", tt_yolo.key, cache_dir=session_store.root)
    assert result.returncode == 0, result.stderr
    shown = ("TT-NN programs for Tenstorrent Blackhole p150", "detect_1", "detect_2", "conv2d 110", "mish",
             "yolov4 policy", "boxes PCC", "confidences PCC", ">= 0.99 (Blackhole: >= 0.96)", ">= 0.9")  # fmt: skip
    for text in shown:
        assert text in result.stdout, text


def test_verify_checks_the_files_and_predicts_box_and_confidence_pcc(tt_yolo, session_store):
    result = run_cli("verify", tt_yolo.key, cache_dir=session_store.root)
    assert result.returncode == 0, result.stderr
    assert "files and toolchain: ok" in result.stdout and "tt-metal" in result.stdout
    stored = check_artifact(tt_yolo.path).tt.predicted[0]
    assert f"{stored.box_pcc:.6f}" in result.stdout and f"{stored.confidence_pcc:.6f}" in result.stdout  # re-run, same
    refused = run_cli("verify", tt_yolo.key, "--tt-policy", "accuracy", cache_dir=session_store.root)
    assert_one_line_error(refused, "TT format policy 'accuracy' is for llm artifacts; detector artifacts take yolov4")


def test_serve_and_detect_refuse_a_tt_detector_in_one_line(tt_yolo, session_store, tmp_path):
    refusal = "built for target p150; serving it needs a Tenstorrent Blackhole p150"
    assert_one_line_error(run_cli("serve", tt_yolo.key, "--no-compile", cache_dir=session_store.root), refusal)
    image = tmp_path / "gray.png"
    Image.new("RGB", (64, 48), (128, 128, 128)).save(image)
    detect = run_cli("detect", str(image), "--model", tt_yolo.key, cache_dir=session_store.root)
    assert_one_line_error(detect, refusal)
    with pytest.raises(ArtifactError, match="target p150.*TT runtime"):
        Detector.from_artifact(tt_yolo.key, cache_dir=str(session_store.root))


def test_detect_runs_the_newest_detector_it_can_serve_not_a_newer_tt_one(tt_yolo, compiled_yolo, tmp_path):
    store = ArtifactStore(tmp_path / "cache")
    cpu = compiled_yolo(320)
    for result in (cpu, tt_yolo):
        with store.build(result.key) as workdir:  # published as a compile does: the store records its digest
            shutil.copytree(result.path, workdir, dirs_exist_ok=True, copy_function=os.link)  # links: no GB copies
            if result is tt_yolo:
                newer = Manifest.read(workdir).model_copy(update={"created_at": "2999-01-01T00:00:00+00:00"})
                (workdir / MANIFEST_NAME).unlink()  # a link to the session's manifest: replace it, never write through
                newer.write(workdir)
    image = tmp_path / "gray.png"
    Image.new("RGB", (64, 48), (128, 128, 128)).save(image)

    detect = run_cli("detect", str(image), "--json", cache_dir=store.root)
    assert detect.returncode == 0, detect.stderr
    assert json.loads(detect.stdout)[0]["image_size"] == [64, 48]
    shutil.rmtree(store.path(cpu.key))
    assert_one_line_error(run_cli("detect", str(image), cache_dir=store.root), "built for target p150")
