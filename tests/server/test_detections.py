"""POST /v1/detections on a live server that also serves a language model: uploads as multipart and base64 JSON,
16 concurrent clients, every refusal in OpenAI's error shape, and the model list and metrics."""

from __future__ import annotations

import base64
import io
import math
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from PIL import Image

from ingot.compile.verify.sample_inputs import synthetic_scene
from ingot.runtime.vision.detector import Detector
from ingot.server.images import DERIVED_MIN_IMAGE_PIXELS, image_pixel_limit
from ingot.server.settings import ServerSettings
from tests.server.conftest import LiveServer
from tests.server.test_errors import assert_openai_error

DETECTIONS = "/v1/detections"
MAX_BODY = 2**20


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def live(engine, detector) -> LiveServer:
    server = LiveServer(engine, ServerSettings(max_queue=64, max_request_bytes=MAX_BODY), {"yolov4": detector})
    server.start(timeout=120)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(live: LiveServer):
    with live.http(timeout=300) as client:
        yield client


def expected_top(detector: Detector, data: bytes, count: int = 3) -> list:
    return detector.detect(Image.open(io.BytesIO(data))).detections[:count]


def assert_same_detections(answer: dict, expected: list) -> None:
    got = answer["detections"][: len(expected)]
    assert [d["class_id"] for d in got] == [e.class_id for e in expected]
    for d, e in zip(got, expected):
        assert d["box"] == pytest.approx(list(e.box), abs=0.05) and d["score"] == pytest.approx(e.score, abs=1e-4)
        assert d["class_name"] == e.class_name


def test_multipart_jpeg_upload(http: httpx.Client, detector: Detector) -> None:
    data = encode(synthetic_scene(700, 500, seed=11), "JPEG")
    response = http.post(DETECTIONS, files={"image": ("scene.jpg", data, "image/jpeg")},
                         data={"model": "yolov4", "confidence_threshold": "0.3", "max_detections": "10"})  # fmt: skip
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"model", "detections", "image_size", "timing"}
    assert answer["model"] == "yolov4" and answer["image_size"] == {"width": 700, "height": 500}
    assert 0 < len(answer["detections"]) <= 10 and min(d["score"] for d in answer["detections"]) > 0.3
    assert {"inference_ms", "total_ms"} <= set(answer["timing"])
    for d in answer["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 700 and 0 <= y1 <= y2 <= 500


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_base64_json_upload(http: httpx.Client, detector: Detector, fmt: str) -> None:
    data = encode(synthetic_scene(480, 640, seed=12), fmt)
    response = http.post(DETECTIONS, json={"image": base64.b64encode(data).decode(), "iou_threshold": 0.5})
    assert response.status_code == 200, response.text
    assert response.json()["image_size"] == {"width": 480, "height": 640}
    data_url = f"data:image/{fmt.lower()};base64," + base64.b64encode(data).decode()
    again = http.post(DETECTIONS, json={"image": data_url, "model": "yolov4"})
    assert again.status_code == 200
    assert_same_detections(again.json(), expected_top(detector, data))


def test_16_concurrent_clients_each_get_their_own_images_answer(live: LiveServer, detector: Detector) -> None:
    # Each image has its own size, so an answer for the wrong image cannot pass.
    files = [encode(synthetic_scene(400 + 16 * i, 300 + 8 * i, seed=100 + i), "PNG") for i in range(16)]
    expected = [f.result().detections[:3] for f in [detector.submit(Image.open(io.BytesIO(d))) for d in files]]

    def ask(data: bytes) -> httpx.Response:
        with live.http(timeout=600) as client:
            return client.post(DETECTIONS, files={"image": ("x.png", data, "image/png")})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(ask, files))
    for i, (response, wanted) in enumerate(zip(responses, expected)):
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["image_size"] == {"width": 400 + 16 * i, "height": 300 + 8 * i}
        assert_same_detections(answer, wanted)


def bomb_png() -> bytes:
    """95 million pixels (over Pillow's 89.5 million limit) in a few kilobytes."""
    return encode(Image.new("1", (9500, 10000)), "PNG")


def gif() -> bytes:
    return encode(Image.new("RGB", (32, 32)), "GIF")


@pytest.mark.parametrize(
    ("send", "status", "param"),
    [
        (dict(files={"image": ("a.jpg", b"hello, not an image", "image/jpeg")}), 400, "image"),
        (dict(json={"image": base64.b64encode(b"\x89PNG\r\n\x1a\n truncated").decode()}), 400, "image"),
        (dict(json={"image": "%%% not base64"}), 400, "image"),
        (dict(files={"image": ("big.jpg", b"\xff" * (MAX_BODY + 1), "image/jpeg")}), 413, None),
        (dict(files={"image": ("bomb.png", bomb_png(), "image/png")}), 413, "image"),
        (dict(files={"image": ("a.txt", b"text", "text/plain")}), 415, "image"),
        (dict(files={"image": ("a.gif", gif(), "image/gif")}), 415, "image"),
        (dict(files={"image": ("a.gif", gif(), "application/octet-stream")}), 415, "image"),
        (dict(content=b"raw bytes", headers={"Content-Type": "image/jpeg"}), 415, None),
        (dict(files={"picture": ("a.png", b"x", "image/png")}), 400, "image"),
        (dict(json={"image": "aGk=", "confidence_threshold": 1.5}), 400, "confidence_threshold"),
        (dict(json={"image": "aGk=", "max_detections": 0}), 400, "max_detections"),
        (dict(json={"image": "aGk=", "stream": True}), 400, "stream"),
        (dict(content=b"{not json", headers={"Content-Type": "application/json"}), 400, None),
        (dict(json={"image": "aGk=", "model": "no-such-model"}), 404, "model"),
    ],
    ids=["not-an-image", "truncated", "bad-base64", "over-size-limit", "decompression-bomb", "text-upload", "gif",
         "gif-sniffed", "raw-body", "no-image-field", "threshold", "max-detections", "unknown-field", "bad-json",
         "unknown-model"],  # fmt: skip
)
def test_refusals_are_openai_shaped(http: httpx.Client, send: dict, status: int, param: str | None) -> None:
    assert_openai_error(http.post(DETECTIONS, **send), status, param)


def test_a_language_model_named_for_detection_and_vice_versa_is_refused(live: LiveServer, http: httpx.Client) -> None:
    data = base64.b64encode(encode(synthetic_scene(64, 64, seed=1), "PNG")).decode()
    error = assert_openai_error(http.post(DETECTIONS, json={"image": data, "model": live.model}), 400, "model")
    assert "language model" in error["message"]
    chat = {"model": "yolov4", "messages": [{"role": "user", "content": "hi"}]}
    error = assert_openai_error(http.post("/v1/chat/completions", json=chat), 400, "model")
    assert "/v1/detections" in error["message"]


def test_models_lists_both_kinds_and_metrics_count_detections(live: LiveServer, http: httpx.Client) -> None:
    ids = [card["id"] for card in http.get("/v1/models").json()["data"]]
    assert ids == [live.model, "yolov4"]
    ok = live.metric("ingot:detection_requests_total", model_name="yolov4", status="ok")
    errors = live.metric("ingot:detection_requests_total", model_name="yolov4", status="error")
    latency = live.metric("ingot:detection_request_latency_seconds_count", model_name="yolov4")
    data = base64.b64encode(encode(synthetic_scene(64, 64, seed=2), "PNG")).decode()
    assert http.post(DETECTIONS, json={"image": data}).status_code == 200
    assert http.post(DETECTIONS, files={"image": ("a.jpg", b"nope", "image/jpeg")}).status_code == 400
    assert live.metric("ingot:detection_requests_total", model_name="yolov4", status="ok") == ok + 1
    assert live.metric("ingot:detection_requests_total", model_name="yolov4", status="error") == errors + 1
    assert live.metric("ingot:detection_request_latency_seconds_count", model_name="yolov4") == latency + 2


def with_declared_size(data: bytes, fmt: str, width: int, height: int) -> bytes:
    """A small image file whose header claims ``width`` x ``height``: the data stream is far too short for that."""
    if fmt == "PNG":
        header = struct.pack(">II", width, height) + data[24:29]  # IHDR: size, then depth, colour, compression, ...
        chunk = b"IHDR" + header
        return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]
    sof = data.index(b"\xff\xc0")  # JPEG baseline frame header: length, precision, height, width
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def peak_added_rss(work) -> tuple[int, object]:
    """The most this process's resident memory grew over its starting size while ``work()`` ran, and its result."""
    process = psutil.Process()
    baseline = peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return max(peak, process.memory_info().rss) - baseline, result


def post_concurrently(live: LiveServer, uploads: list[tuple[str, bytes, str]]) -> list[httpx.Response]:
    def post(upload: tuple[str, bytes, str]) -> httpx.Response:
        with live.http(timeout=300) as client:
            return client.post(DETECTIONS, files={"image": upload})

    with ThreadPoolExecutor(len(uploads)) as pool:
        return list(pool.map(post, uploads))


def test_images_declaring_more_pixels_than_the_cap_are_refused_before_decoding(live: LiveServer) -> None:
    """A 9400x9400 PNG of a few hundred bytes and a 9000x9000 JPEG of a few kilobytes were decoded (the cap was
    Pillow's 89.5 Mpx) and eight at once added 4.3 GB to the server."""
    small = synthetic_scene(64, 64, seed=3)
    png = with_declared_size(encode(small, "PNG"), "PNG", 9400, 9400)
    jpeg = with_declared_size(encode(small, "JPEG"), "JPEG", 9000, 9000)
    assert len(png) < 20_000 and len(jpeg) < 20_000
    assert Image.open(io.BytesIO(png)).size == (9400, 9400) and Image.open(io.BytesIO(jpeg)).size == (9000, 9000)
    uploads = [("bomb.png", png, "image/png"), ("bomb.jpg", jpeg, "image/jpeg")] * 4
    added, responses = peak_added_rss(lambda: post_concurrently(live, uploads))
    for response in responses:
        error = assert_openai_error(response, 413, "image")
        assert error["code"] == "image_too_large" and str(DERIVED_MIN_IMAGE_PIXELS) in error["message"]
    assert added < 100 * 2**20


def test_images_just_under_the_cap_are_decoded_a_few_at_a_time(live: LiveServer) -> None:
    """Eight 16-Mpx images at once: each decode and its RGB copies take ~150 MB, so they must not all run together."""
    side = math.isqrt(DERIVED_MIN_IMAGE_PIXELS)
    big = encode(Image.new("RGB", (side, side), (90, 120, 200)), "PNG")
    added, responses = peak_added_rss(lambda: post_concurrently(live, [("big.png", big, "image/png")] * 8))
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.json()["image_size"] == {"width": side, "height": side}
    assert added < 2**29  # 0.5 GB


def test_the_pixel_cap_follows_the_detectors_input_size_unless_configured() -> None:
    assert image_pixel_limit(320, None) == image_pixel_limit(512, None) == DERIVED_MIN_IMAGE_PIXELS
    assert image_pixel_limit(1024, None) == 8192 * 8192
    assert image_pixel_limit(320, 1000) == 1000
