"""The FastAPI app over a set of engines; ``ingot serve`` runs it with uvicorn, tests run it in-process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ingot import __version__
from ingot.runtime.engine import Engine
from ingot.runtime.serving_memory import format_bytes, resident_bytes, weight_bytes
from ingot.runtime.vision.detector import Detector
from ingot.server import chat, completions, detections, routes
from ingot.server.access_log import AccessLogMiddleware
from ingot.server.bodies import schema_components
from ingot.server.errors import DETECTION_ERROR_RESPONSES, ERROR_RESPONSES, document_errors, install_error_handlers
from ingot.server.images import image_pixel_limit
from ingot.server.metrics import ServerMetrics
from ingot.server.protocol import ChatCompletionRequest, CompletionRequest, TokenizeRequest
from ingot.server.middleware import ApiKeyMiddleware, BodyLimitMiddleware, InternalErrorMiddleware
from ingot.server.page import install_playground
from ingot.server.served import ServedDetector, ServedModel
from ingot.server.settings import ServerSettings
from ingot.server.state import ServerState

log = logging.getLogger("ingot.server")


def create_app(
    engines: Mapping[str, Engine], settings: ServerSettings | None = None, detectors: Mapping[str, Detector] = {}
) -> FastAPI:
    """``engines`` maps each language model's name (as clients send it in ``model``) to its engine, ``detectors``
    each detection model's name to its detector; the first of each kind is its endpoints' default.

    The app does not own the engines or detectors: whoever made them shuts them down after the server has stopped.
    """
    if not engines and not detectors:
        raise ValueError("create_app needs at least one engine or detector")
    settings = settings or ServerSettings()
    state = ServerState(
        models={name: ServedModel(name, engine, settings.max_queue) for name, engine in engines.items()},
        settings=settings,
        metrics=ServerMetrics(engines, detectors),
        detectors={
            name: ServedDetector(
                name, detector, settings.max_queue,
                image_pixel_limit(detector.info.input_size, settings.max_image_pixels),
            )
            for name, detector in detectors.items()
        },
    )
    app = FastAPI(title="ingot", version=__version__, lifespan=_warm_up_in_background)
    app.state.ingot = state
    install_error_handlers(app)
    app.include_router(completions.router, responses=ERROR_RESPONSES)
    app.include_router(chat.router, responses=ERROR_RESPONSES)
    app.include_router(detections.router, responses=DETECTION_ERROR_RESPONSES)
    app.include_router(routes.router)
    if settings.playground:
        install_playground(app)
    document_errors(app, schema_components([CompletionRequest, ChatCompletionRequest, TokenizeRequest]))
    # The last added runs first: log every request, then check its key, then its size; bugs become 500s inside.
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes, read_timeout=settings.read_timeout)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.add_middleware(AccessLogMiddleware, log_prompts=settings.log_prompts)
    return app


@asynccontextmanager
async def _warm_up_in_background(app: FastAPI) -> AsyncIterator[None]:
    """The server listens at once (so /health can say 503) and turns ready when every model has warmed up."""
    task = asyncio.create_task(warm_up(app.state.ingot))
    task.add_done_callback(_report_failure)
    try:
        yield
    finally:
        task.cancel()


async def warm_up(state: ServerState) -> None:
    """Every model's first generation, then ready. `ingot serve` runs it in the background (/health says 503 until
    then); a Ray replica awaits it before it takes requests."""
    for served in state.all_served():
        await served.warm_up()
        log.info("%s is warm", served.name)
    log.info(_memory_after_warm_up(state))
    state.ready = True
    log.info("ready: serving %s", ", ".join(served.name for served in state.all_served()))


def _memory_after_warm_up(state: ServerState) -> str:
    """The process's RSS beside what it serves: every model's weights and the language models' KV caches (their
    sum plus the runtime's overhead is what `ingot inspect` expects)."""
    weights = sum(weight_bytes(m.engine.manifest) for m in state.models.values())
    weights += sum(weight_bytes(d.detector.manifest) for d in state.detectors.values())
    kv_cache = sum(m.engine.runner.kv_cache.nbytes for m in state.models.values())
    return (
        f"RSS {format_bytes(resident_bytes())} after warm-up "
        f"(weights {format_bytes(weights)}, KV cache {format_bytes(kv_cache)})"
    )


def _report_failure(task: asyncio.Task) -> None:
    """Without this a failed warm-up would only show as a /health that never turns 200."""
    if not task.cancelled() and task.exception() is not None:
        log.error("warm-up failed; /health stays 503", exc_info=task.exception())
