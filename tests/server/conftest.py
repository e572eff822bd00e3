"""A real uvicorn server on a free local port, in a background thread, over one engine on the tiny llama artifact."""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import openai
import pytest
import uvicorn

from ingot.artifacts.integrity import check_artifact
from ingot.runtime.engine import Engine
from ingot.server.app import create_app
from ingot.server.run import uvicorn_limits
from ingot.server.settings import ServerSettings

API_KEY = "test-key"


class LiveServer:
    def __init__(self, engine: Engine, settings: ServerSettings, detectors: dict | None = None) -> None:
        self.engine = engine
        self.settings = settings
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = create_app({engine.model_name: engine}, settings, detectors or {})
        config = uvicorn.Config(app, log_level="warning", access_log=False, **uvicorn_limits(settings))
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)

    @property
    def model(self) -> str:
        return self.engine.model_name

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}

    def start(self, timeout: float = 60) -> None:
        gc.freeze()  # as `ingot serve` does: a full collection of everything loaded would stall the event loop
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the server did not turn healthy")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()

    def client(self, **kwargs: object) -> openai.OpenAI:
        key = self.settings.api_key or "none"
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kwargs)

    def http(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(**{"base_url": self.url, "headers": self.headers, "timeout": 60, **kwargs})

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value from /metrics, found by name and labels (model_name is added unless given)."""
        labels = {"model_name": self.model, **labels}
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)


@pytest.fixture(scope="session")
def engine(compiled) -> Iterator[Engine]:
    path = compiled("llama").path
    engine = Engine(path, check_artifact(path), num_blocks=256)
    yield engine
    engine.shutdown()


@contextmanager
def live_servers(engine: Engine) -> Iterator[Callable[..., LiveServer]]:
    """start(**settings) -> a started LiveServer over ``engine``; every one started is stopped on leaving."""
    servers: list[LiveServer] = []

    def start(**settings: object) -> LiveServer:
        server = LiveServer(engine, ServerSettings(**settings))
        server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def serve(engine):
    """serve(**settings) -> a started LiveServer over the shared engine; stopped at the end of the session."""
    with live_servers(engine) as start:
        yield start


@pytest.fixture(scope="session")
def server(serve) -> LiveServer:
    """The main server: an API key, and a queue deep enough for the concurrency tests."""
    return serve(api_key=API_KEY, max_queue=64)


@pytest.fixture(scope="session")
def client(server: LiveServer) -> openai.OpenAI:
    return server.client()


@pytest.fixture(scope="session")
def long_engine(tiny_model, session_store) -> Iterator[Engine]:
    """The tiny llama compiled with 1024 tokens of context: tools described in a system message take ~90 tokens
    per tool with the tiny tokenizer, more than the shared 256-token artifact leaves room for."""
    from ingot.compile.llm.kind import compile_model
    from ingot.compile.options import CompileOptions

    options = CompileOptions.parse(max_batch=4, max_context=1024, prefill_buckets=(16, 32, 64))
    path = compile_model(str(tiny_model("llama")), options, session_store, quiet=True).path
    engine = Engine(path, check_artifact(path), num_blocks=256)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def serve_long(long_engine):
    """serve_long(**settings) -> a started LiveServer over the long-context engine."""
    with live_servers(long_engine) as start:
        yield start
