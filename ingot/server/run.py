"""Running the app under uvicorn for `ingot serve`, with a graceful shutdown on SIGTERM."""

from __future__ import annotations

import gc
import signal
from collections.abc import Mapping

import uvicorn

from ingot.runtime.engine import Engine
from ingot.runtime.vision.detector import Detector
from ingot.server.app import create_app
from ingot.server.settings import ServerSettings


def serve(
    engines: Mapping[str, Engine],
    settings: ServerSettings,
    host: str,
    port: int,
    detectors: Mapping[str, Detector] = {},
) -> None:
    """Serve until SIGTERM (or Ctrl-C), then stop the engines and detectors.

    On the signal uvicorn stops accepting connections and lets in-flight requests finish for up to
    ``settings.shutdown_timeout`` seconds; then it cancels the rest, which aborts them in the engine.
    """
    config = uvicorn.Config(
        create_app(engines, settings, detectors),
        host=host,
        port=port,
        access_log=False,  # ingot.access logs each request, with its tokens and timings
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    # After its graceful shutdown uvicorn re-raises the signal it caught, to the handler installed before it ran.
    # For SIGTERM that handler is this no-op, so a requested shutdown exits 0 instead of dying by the signal.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    # Everything loaded so far (torch, transformers, the models: ~250k objects) lives as long as the server. A full
    # collection traverses it all, ~70 ms with the interpreter lock held, stalling the event loop and the engine;
    # frozen, those objects are left out of every collection.
    gc.freeze()
    try:
        uvicorn.Server(config).run()
    finally:
        for runner in [*engines.values(), *detectors.values()]:
            runner.shutdown()
