"""The detector: images in, detections out. One background thread owns the compiled program and groups the
requests waiting for it into the artifact's fixed batch sizes (the LLM engine's shape, for images)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.manifest import Manifest
from ingot.artifacts.store import ArtifactStore
from ingot.errors import ArtifactError, IngotError
from ingot.runtime.servable import unservable_reason
from ingot.runtime.threads import call_on_fresh_thread
from ingot.runtime.vision.decode import decode_heads
from ingot.runtime.vision.letterbox import Letterbox, letterbox
from ingot.runtime.vision.postprocess import Detection, DetectParams, select_detections
from ingot.runtime.vision.runner import DetectorRunner

log = logging.getLogger("ingot.detector")


@dataclass(frozen=True)
class DetectionResult:
    detections: list[Detection]
    image_size: tuple[int, int]  # width, height of the original image
    timing: dict[str, float]  # milliseconds: preprocess, queue, inference (of the whole batch), postprocess
    batch_size: int  # images in the batch this one ran in


@dataclass(eq=False)
class _Job:
    pixels: torch.Tensor
    placement: Letterbox
    params: DetectParams
    future: Future
    preprocess_ms: float
    queued_at: float = field(default_factory=time.perf_counter)


class DetectorStopped(IngotError):
    """The detector was shut down before it ran the image."""


class Detector:
    def __init__(self, directory: Path, manifest: Manifest) -> None:
        if manifest.kind != "detector":
            raise ArtifactError(f"{manifest.key}: a {manifest.kind} artifact, not a detector")
        refusal = unservable_reason(manifest)
        if refusal:
            raise ArtifactError(refusal)
        self.manifest = manifest
        self.model_name = manifest.model.name
        self.info = manifest.detector
        self.runner = call_on_fresh_thread(lambda: DetectorRunner(directory, manifest))
        self._jobs: deque[_Job] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"detector-{self.model_name}", daemon=True)
        self._thread.start()

    @classmethod
    def from_artifact(cls, key_or_path: str, cache_dir: str | None = None) -> Detector:
        path = ArtifactStore.open(cache_dir).resolve(key_or_path)
        return cls(path, check_artifact(path))

    # --- requests (any thread) -------------------------------------------------------------

    def submit(self, image: Image.Image, params: DetectParams = DetectParams()) -> Future:
        """Queue one image (letterboxed here, on the caller's thread); the future resolves to a DetectionResult.
        Invalid thresholds raise RequestError here."""
        resolved = params.resolve(self.info)
        start = time.perf_counter()
        pixels, placement = letterbox(image, self.info.input_size, self.info.preprocess.pad_value)
        job = _Job(pixels, placement, resolved, Future(), (time.perf_counter() - start) * 1e3)
        with self._wake:
            if self._stopping:
                raise DetectorStopped(f"{self.model_name} is shutting down")
            self._jobs.append(job)
            self._wake.notify()
        return job.future

    def detect(self, image: Image.Image, params: DetectParams = DetectParams()) -> DetectionResult:
        return self.submit(image, params).result()

    async def detect_async(self, image: Image.Image, params: DetectParams = DetectParams()) -> DetectionResult:
        future = await asyncio.to_thread(self.submit, image, params)
        return await asyncio.wrap_future(future)

    def warm_up(self) -> None:
        """One image through the program, so that the first request pays no first-call costs."""
        self.detect(Image.new("RGB", (self.info.input_size, self.info.input_size)))

    def shutdown(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=60)

    # --- the detector thread ---------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._jobs and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    pending = list(self._jobs)
                    self._jobs.clear()
                    break
                batch = [self._jobs.popleft() for _ in range(min(len(self._jobs), self.runner.max_batch))]
            try:
                self._run(batch)
            except Exception as error:  # a bug or a broken program: fail these requests, keep serving
                log.exception("detector batch failed")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
        for job in pending:
            job.future.set_exception(DetectorStopped(f"{self.model_name} shut down"))

    def _run(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        heads = self.runner.run(torch.stack([job.pixels for job in batch]))
        inference_ms = (time.perf_counter() - started) * 1e3
        boxes, scores = decode_heads(heads, self.info)
        for index, job in enumerate(batch):
            post_start = time.perf_counter()
            detections = select_detections(boxes[index], scores[index], job.placement, job.params, self.info)
            timing = {
                "preprocess_ms": round(job.preprocess_ms, 2),
                "queue_ms": round((started - job.queued_at) * 1e3, 2),
                "inference_ms": round(inference_ms, 2),
                "postprocess_ms": round((time.perf_counter() - post_start) * 1e3, 2),
            }
            size = (job.placement.width, job.placement.height)
            job.future.set_result(DetectionResult(detections, size, timing, len(batch)))
