"""What one request may ask for, and what it costs the rest: limits answered 400 before any expensive work, and the
work itself (parsing, templating, tokenizing) kept off the event loop so that other requests are answered meanwhile."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from ingot.server.settings import DEFAULT_MAX_LOGIT_BIAS, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_STOP_SEQUENCES
from tests.server.test_errors import CHAT, COMPLETIONS, HELLO, assert_openai_error


def test_stop_sequences_beyond_the_limit_are_400(server) -> None:
    """100k stop strings were accepted; each is matched per token per sequence."""
    allowed = {"prompt": "Hello", "max_tokens": 2, "stop": [f"stop{i}" for i in range(DEFAULT_MAX_STOP_SEQUENCES)]}
    assert server.http().post(COMPLETIONS, json=allowed).status_code == 200
    over = {**allowed, "stop": [f"stop{i}" for i in range(DEFAULT_MAX_STOP_SEQUENCES + 1)]}
    error = assert_openai_error(server.http().post(COMPLETIONS, json=over), 400, "stop")
    assert str(DEFAULT_MAX_STOP_SEQUENCES) in error["message"]
    huge = {"messages": HELLO, "stop": ["x"] * 100_000}
    assert_openai_error(server.http().post(CHAT, json=huge), 400, "stop")


def test_logit_bias_beyond_the_limit_is_400(server) -> None:
    """A full-vocabulary logit_bias cost ~39 ms per sequence per token."""
    allowed = {"prompt": "Hello", "max_tokens": 2, "logit_bias": {str(i): 1 for i in range(DEFAULT_MAX_LOGIT_BIAS)}}
    assert server.http().post(COMPLETIONS, json=allowed).status_code == 200
    over = {**allowed, "logit_bias": {str(i): 1 for i in range(DEFAULT_MAX_LOGIT_BIAS + 1)}}
    error = assert_openai_error(server.http().post(COMPLETIONS, json=over), 400, "logit_bias")
    assert str(DEFAULT_MAX_LOGIT_BIAS) in error["message"]


def test_the_limits_are_the_servers_settings(serve) -> None:
    strict = serve(max_stop_sequences=1, max_logit_bias=1)
    assert_openai_error(strict.http().post(COMPLETIONS, json={"prompt": "Hi", "stop": ["a", "b"]}), 400, "stop")
    bias = {"prompt": "Hi", "logit_bias": {"1": 1, "2": 1}}
    assert_openai_error(strict.http().post(COMPLETIONS, json=bias), 400, "logit_bias")
    assert strict.http().post(COMPLETIONS, json={"prompt": "Hi", "max_tokens": 1, "stop": ["a"]}).status_code == 200


class HealthProbe:
    """Asks /health every 20 ms on its own connection, recording how long each answer took."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            while not self._stop.wait(0.02):
                start = time.perf_counter()
                assert http.get("/health").status_code == 200
                self.latencies.append(time.perf_counter() - start)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def as_json(body: dict) -> bytes:
    return json.dumps(body).encode()


ROOM = DEFAULT_MAX_REQUEST_BYTES - 1000  # bodies just under the default limit

# Processed on worker threads: tokenized (prompts that fit, and one that is too long), templated.
PROCESSED = {
    "fitting-prompts": lambda: as_json({"prompt": ["The quick brown fox jumps over the lazy dog. " * 5] * 64,
                                        "max_tokens": 1, "stop": [" a", " b", " c", " d"]}),
    "long-text": lambda: as_json({"prompt": "The quick brown fox jumps over the lazy dog. " * (ROOM // 45)}),
    "long-chat": lambda: as_json({"messages": [{"role": "user", "content": "fox " * (ROOM // 4)}]}),
}  # fmt: skip
# Refused by their counts, before validation; 600k one-character prompts used to take 19 s to refuse.
MANY_ITEMS = {
    "many-prompts": lambda: as_json({"prompt": ["a"] * (ROOM // 5)}),
    "many-messages": lambda: as_json({"messages": [{"role": "user", "content": "a"}] * (ROOM // 34)}),
    "many-token-ids": lambda: as_json({"prompt": [[1] * (ROOM // 3)]}),
    "many-stops": lambda: as_json({"prompt": "a", "stop": ["a"] * (ROOM // 5)}),
    "many-biases": lambda: as_json({"prompt": "a", "logit_bias": {str(i): 1 for i in range(ROOM // 13)}}),
}


def health_during(server, body: bytes) -> tuple[httpx.Response, float, list[float]]:
    """The response to ``body``, how long it took, and how long /health took meanwhile."""
    path = CHAT if body.startswith(b'{"messages"') else COMPLETIONS
    with HealthProbe(server.url) as probe:
        time.sleep(0.2)  # a few answers before the body arrives
        start = time.perf_counter()
        response = server.http().post(path, content=body, headers={"Content-Type": "application/json"})
        took = time.perf_counter() - start
        time.sleep(0.1)
    assert len(probe.latencies) >= 10
    return response, took, probe.latencies


@pytest.mark.parametrize("name", list(PROCESSED))
def test_health_answers_within_100_ms_while_the_largest_bodies_are_processed(server, name) -> None:
    body = PROCESSED[name]()
    assert len(body) <= DEFAULT_MAX_REQUEST_BYTES
    response, took, latencies = health_during(server, body)
    if name == "fitting-prompts":
        assert response.status_code == 200, response.text
        assert len(response.json()["choices"]) == 64
    else:
        assert assert_openai_error(response, 400)["code"] == "context_length_exceeded"
    assert max(latencies) < 0.1, f"/health took up to {max(latencies) * 1e3:.0f} ms"


@pytest.mark.parametrize("name", list(MANY_ITEMS))
def test_bodies_of_too_many_items_are_refused_at_once_stalling_nothing_beyond_their_json_parse(server, name) -> None:
    """Only the JSON parse itself (C code, holding the interpreter lock) runs uninterrupted: it is timed here, on
    this machine, and /health may take that long on top of its 100 ms."""
    body = MANY_ITEMS[name]()
    assert ROOM - 200_000 < len(body) <= DEFAULT_MAX_REQUEST_BYTES
    start = time.perf_counter()
    json.loads(body)
    parse = time.perf_counter() - start
    response, took, latencies = health_during(server, body)
    error = assert_openai_error(response, 400)
    assert error["param"] in ("prompt", "messages", "stop", "logit_bias") or error["code"] == "context_length_exceeded"
    assert took < 2 + 3 * parse, f"refusing the body took {took:.1f} s"
    assert max(latencies) < 0.1 + 2 * parse, f"/health took up to {max(latencies) * 1e3:.0f} ms, the parse {parse * 1e3:.0f}"


def test_a_text_that_cannot_fit_the_context_is_refused_without_tokenizing_it(server) -> None:
    served = server.engine
    text = "fox " * 1_000_000
    start = time.perf_counter()
    error = assert_openai_error(server.http().post(COMPLETIONS, json={"prompt": text}), 400, "prompt")
    assert error["code"] == "context_length_exceeded"
    assert str(served.max_context) in error["message"] and str(len(text)) in error["message"]
    assert time.perf_counter() - start < 2  # tokenizing it took seconds
