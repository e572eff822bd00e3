"""`ingot detect` as a user runs it: detections printed, and drawn onto a PNG copy of the image."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageChops

from ingot.compile.verify.sample_inputs import synthetic_scene
from tests.conftest import run_cli


def test_detect_prints_detections_and_draws_them(compiled_yolo, session_store, tmp_path: Path) -> None:
    key = compiled_yolo(320).key
    source = tmp_path / "street.jpg"
    synthetic_scene(800, 600, seed=5).save(source, quality=95)
    out = tmp_path / "annotated.png"
    result = run_cli("detect", str(source), "--model", key, "--out", str(out), "--max-detections", "5", "--json",
                     cache_dir=session_store.root)  # fmt: skip
    assert result.returncode == 0, result.stderr
    [report] = json.loads(result.stdout)
    assert report["image_size"] == [800, 600] and 0 < len(report["detections"]) <= 5

    annotated, original = Image.open(out), Image.open(source).convert("RGB")
    assert annotated.format == "PNG" and annotated.size == original.size
    x1, y1, x2, y2 = (round(v) for v in report["detections"][0]["box"])
    inside = (x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))
    assert ImageChops.difference(annotated.crop(inside), original.crop(inside)).getbbox() is not None
    assert Image.open(source).format == "JPEG"  # the input is left as it was

    table = run_cli("detect", str(source), "--model", key, "--max-detections", "2", cache_dir=session_store.root)
    assert table.returncode == 0 and "detections" in table.stdout and "score" in table.stdout


def test_detect_refuses_a_file_that_is_not_an_image_in_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    result = run_cli("detect", str(text), cache_dir=tmp_path)
    assert result.returncode == 1 and result.stderr.strip() == f"error: {text}: not an image (or unreadable)"
    synthetic_scene(64, 64, seed=0).save(tmp_path / "ok.png")
    truncated = tmp_path / "truncated.png"  # opens (its header is fine), fails only when decoded
    truncated.write_bytes((tmp_path / "ok.png").read_bytes()[:200])
    result = run_cli("detect", str(truncated), cache_dir=tmp_path)
    assert result.returncode == 1 and result.stderr.strip() == f"error: {truncated}: not an image (or unreadable)"
    missing = run_cli("detect", str(tmp_path / "ok.png"), cache_dir=tmp_path)
    assert missing.returncode == 1 and "yolov4 is not compiled" in missing.stderr
