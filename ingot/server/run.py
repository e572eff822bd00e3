"""Running the app under uvicorn for `ingot serve`, with a graceful shutdown on SIGTERM."""

from __future__ import annotations

import errno
import gc
import signal
import socket
from collections.abc import Mapping

import uvicorn

from ingot.errors import OptionError
from ingot.runtime.engine import Engine
from ingot.runtime.vision.detector import Detector
from ingot.server.app import create_app
from ingot.server.settings import ServerSettings


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before any model loads, so a busy port is reported at once."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise OptionError(f"--host {host}: not an address this machine has ({error.strerror})") from None
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(info[4])
        sock.listen(2048)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise OptionError(f"port {port} on {host} is in use") from None
        raise OptionError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sock


def serve(
    engines: Mapping[str, Engine],
    settings: ServerSettings,
    sock: socket.socket,
    detectors: Mapping[str, Detector] = {},
) -> None:
    """Serve until SIGTERM (or Ctrl-C), then stop the engines and detectors.

    On the signal uvicorn stops accepting connections and lets in-flight requests finish for up to
    ``settings.shutdown_timeout`` seconds; then it cancels the rest, which aborts them in the engine.
    """
    config = uvicorn.Config(
        create_app(engines, settings, detectors),
        access_log=False,  # ingot.access logs each request, with its tokens and timings
        timeout_graceful_shutdown=settings.shutdown_timeout,
        timeout_keep_alive=settings.timeout_keep_alive,
        limit_concurrency=settings.max_connections,
    )
    # After its graceful shutdown uvicorn re-raises the signal it caught, to the handler installed before it ran.
    # For SIGTERM that handler is this no-op, so a requested shutdown exits 0 instead of dying by the signal.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    # Everything loaded so far (torch, transformers, the models: ~250k objects) lives as long as the server. A full
    # collection traverses it all, ~70 ms with the interpreter lock held, stalling the event loop and the engine;
    # frozen, those objects are left out of every collection.
    gc.freeze()
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for runner in [*engines.values(), *detectors.values()]:
            runner.shutdown()
