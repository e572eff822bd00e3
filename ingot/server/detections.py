"""POST /v1/detections: objects in one image, as multipart/form-data (the file in ``image``) or as JSON (``image``
as base64 or a data URL), with optional ``model``, ``confidence_threshold``, ``iou_threshold``, ``max_detections``."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from ingot.runtime.vision.postprocess import DetectParams
from ingot.server.access_log import access_record
from ingot.server.errors import bad_request
from ingot.server.images import UPLOAD_TYPES, decode_base64, decode_image, unsupported_media
from ingot.server.served import ServedDetector
from ingot.server.state import server_state

router = APIRouter()


class DetectionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    confidence_threshold: float | None = Field(None, ge=0, le=1)
    iou_threshold: float | None = Field(None, ge=0, le=1)
    max_detections: int | None = Field(None, ge=1)


class DetectionJSONRequest(DetectionOptions):
    image: str  # base64, or a data URL


class DetectedObject(BaseModel):
    box: list[float]  # x1, y1, x2, y2 in the image's pixels
    score: float
    class_id: int
    class_name: str


class ImageSize(BaseModel):
    width: int
    height: int


class DetectionResponse(BaseModel):
    model: str
    detections: list[DetectedObject]
    image_size: ImageSize
    timing: dict[str, float]  # milliseconds


@router.post("/v1/detections")
async def create_detections(request: Request) -> DetectionResponse:
    start = time.perf_counter()
    options, data = await _read_request(request)
    state = server_state(request)
    served = state.detector(options.model)
    access_record(request).model = served.name
    served.reserve(1)
    found = None
    try:
        params = DetectParams(options.confidence_threshold, options.iou_threshold, options.max_detections)
        decoding = asyncio.get_running_loop().run_in_executor(served.decoder, _decode_and_submit, served, data, params)
        result = await asyncio.wrap_future(await decoding)
        found = len(result.detections)
    finally:
        served.release(1)
        state.metrics.observe_detection(served.name, time.perf_counter() - start, found)
    return DetectionResponse(
        model=served.name,
        detections=[DetectedObject(box=list(d.box), score=d.score, class_id=d.class_id, class_name=d.class_name)
                    for d in result.detections],  # fmt: skip
        image_size=ImageSize(width=result.image_size[0], height=result.image_size[1]),
        timing={**result.timing, "total_ms": round((time.perf_counter() - start) * 1e3, 2)},
    )


def _decode_and_submit(served: ServedDetector, data: bytes, params: DetectParams) -> Future:
    """Decode and letterbox (in ``submit``) in one go: once submitted, only the input-sized tensor is kept."""
    return served.detector.submit(decode_image(data, served.max_image_pixels), params)


async def _read_request(request: Request) -> tuple[DetectionOptions, bytes]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = _validated(DetectionJSONRequest, await request.body(), json=True)
        return body, decode_base64(body.image)
    if content_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise bad_request("image: a file field named `image` is required", param="image")
        declared = (upload.content_type or "application/octet-stream").split(";")[0].strip().lower()
        if declared not in UPLOAD_TYPES:
            raise unsupported_media(f"image: content type {declared} is not an image type (JPEG, PNG or WebP)")
        fields = {k: v for k, v in form.multi_items() if k != "image"}
        return _validated(DetectionOptions, fields), await upload.read()
    raise unsupported_media(
        "Content-Type must be multipart/form-data (the file in a field named `image`) or application/json "
        "(`image` as base64)"
    )


def _validated(model: type[BaseModel], data, json: bool = False):
    """Pydantic's errors go through the app's handler, which names the parameter in OpenAI's error shape."""
    try:
        return model.model_validate_json(data) if json else model.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in error.errors()]) from None
