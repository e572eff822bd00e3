"""One served model: its engine (or detector), and how many of its requests are in flight (neither bounds its queue)."""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor

from ingot.errors import IngotError
from ingot.runtime.engine import Engine
from ingot.runtime.sampling_params import SamplingParams
from ingot.runtime.vision.detector import Detector
from ingot.server.errors import APIError
from ingot.server.prompts import max_prompt_chars

RETRY_AFTER_SECONDS = 1
WARM_UP_PROMPT = "Hello"


class WarmUpFailed(IngotError):
    """A model's first generation failed: it is not ready, whatever else is."""


class _Admission:
    """At most ``max_queue`` requests in flight per model; beyond that, 429."""

    def __init__(self, name: str, max_queue: int) -> None:
        self.name = name
        self.max_queue = max_queue
        self.in_flight = 0  # engine requests; touched only on the event loop, so no lock
        self.created = int(time.time())

    def reserve(self, count: int) -> None:
        """Take ``count`` queue slots, or answer 429 so that clients back off instead of queueing without bound."""
        if self.in_flight + count > self.max_queue:
            raise APIError(
                429,
                f"{self.name} has {self.in_flight} requests in flight (at most {self.max_queue}); retry later",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.in_flight += count

    def release(self, count: int) -> None:
        self.in_flight -= count


class ServedModel(_Admission):
    """A language model served under ``name``: its model's name, or the one `--served-model-name` gives it."""

    def __init__(self, name: str, engine: Engine, max_queue: int) -> None:
        super().__init__(name, max_queue)
        self.engine = engine

    @functools.cached_property
    def max_prompt_chars(self) -> int:
        """The longest text that could fit the context (computed on first use: it reads the whole vocabulary)."""
        return max_prompt_chars(self.engine)

    async def warm_up(self) -> None:
        """One short generation: a prefill then a decode step, so the first user request pays no load-time costs."""
        params = SamplingParams(max_tokens=2, temperature=0, ignore_eos=True)
        async for output in self.engine.stream(self.engine.tokenize(WARM_UP_PROMPT), params):
            if output.finish_reason in ("error", "abort"):  # the engine failed it (its log says why)
                raise WarmUpFailed(f"{self.name}: the warm-up generation failed")


# Images decoded at once per detector, each on one of this many threads. A decode at the default pixel cap peaks near
# 160 MB (the decoded image and its RGB copies), so two bound it to a third of a gigabyte and keep two cores busy.
# Their own threads, not a shared pool: each thread's malloc arena keeps what it freed, so the memory images take
# stays bounded only if few threads ever decode.
DECODE_THREADS = 2


class ServedDetector(_Admission):
    def __init__(self, name: str, detector: Detector, max_queue: int, max_image_pixels: int) -> None:
        super().__init__(name, max_queue)
        self.detector = detector
        self.max_image_pixels = max_image_pixels
        self.decoder = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix=f"decode-{name}")

    async def warm_up(self) -> None:
        await asyncio.to_thread(self.detector.warm_up)
