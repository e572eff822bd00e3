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
from ingot.server.connections import guarded_protocol
from ingot.server.settings import ServerSettings


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening address, bound now, so that a busy port or a bad address is reported before any model loads."""
    if not 1 <= port <= 65535:
        raise OptionError(f"--port must be in 1..65535, not {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise OptionError(f"--host {host} is not an address this machine can listen on") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart need not wait out TIME_WAIT
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise OptionError(f"port {port} on {host} is in use") from None
        raise OptionError(f"cannot listen on {host} port {port}: {error.strerror}") from None
    return sock


def serve(
    engines: Mapping[str, Engine],
    settings: ServerSettings,
    sock: socket.socket,
    detectors: Mapping[str, Detector] = {},
) -> None:
    """Serve on ``sock`` (from ``bind_socket``) until SIGTERM (or Ctrl-C), then stop the engines and detectors.

    On the signal uvicorn stops accepting connections and lets in-flight requests finish for up to
    ``settings.shutdown_timeout`` seconds; then it cancels the rest, which aborts them in the engine.
    """
    config = uvicorn.Config(
        create_app(engines, settings, detectors),
        access_log=False,  # ingot.access logs each request, with its tokens and timings
        timeout_graceful_shutdown=settings.shutdown_timeout,
        **uvicorn_limits(settings),
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


def uvicorn_limits(settings: ServerSettings) -> dict[str, object]:
    """uvicorn.Config's arguments for the connection limits: keep-alive, the head's deadline, the connection cap.

    The cap is the protocol's rather than uvicorn's ``limit_concurrency``, which answers in plain text, and only once
    the head has arrived (a connection that never sends one would still count)."""
    return {
        "timeout_keep_alive": settings.timeout_keep_alive,
        "http": guarded_protocol(settings.read_timeout, settings.max_connections),
    }
