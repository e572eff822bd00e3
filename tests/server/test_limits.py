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


def largest_bodies(max_context: int) -> dict[str, bytes]:
    """Bodies just under the default 4 MB limit that used to be parsed, tokenized or templated on the event loop."""
    room = DEFAULT_MAX_REQUEST_BYTES - 1000
    many_prompts = {"prompt": ["a"] * (room // 4), "max_tokens": 1}  # 600k of these took 19 s to refuse
    long_text = {"prompt": "The quick brown fox jumps over the lazy dog. " * (room // 45), "max_tokens": 1}
    long_chat = {"messages": [{"role": "user", "content": "fox " * (room // 4)}], "max_tokens": 1}
    many_messages = {"messages": [{"role": "user", "content": "a"}] * (room // 30), "max_tokens": 1}
    many_ids = {"prompt": [[1] * (room // 3)], "max_tokens": 1}
    bodies = {"many-prompts": many_prompts, "long-text": long_text, "long-chat": long_chat,
              "many-messages": many_messages, "many-token-ids": many_ids}  # fmt: skip
    return {name: json.dumps(body).encode() for name, body in bodies.items()}


@pytest.mark.parametrize("name", ["many-prompts", "long-text", "long-chat", "many-messages", "many-token-ids"])
def test_health_answers_within_100_ms_while_the_largest_body_is_processed(server, name) -> None:
    body = largest_bodies(server.engine.max_context)[name]
    assert DEFAULT_MAX_REQUEST_BYTES - 2000 < len(body) <= DEFAULT_MAX_REQUEST_BYTES
    path = CHAT if b'"messages"' in body else COMPLETIONS
    with HealthProbe(server.url) as probe:
        time.sleep(0.2)  # a few answers before the body arrives
        start = time.perf_counter()
        response = server.http().post(path, content=body, headers={"Content-Type": "application/json"})
        took = time.perf_counter() - start
        time.sleep(0.1)
    error = assert_openai_error(response, 400)
    assert error["param"] in ("prompt", "messages", None)
    assert took < 5, f"refusing the body took {took:.1f} s"
    assert len(probe.latencies) >= 10
    assert max(probe.latencies) < 0.1, f"/health took up to {max(probe.latencies) * 1e3:.0f} ms"


def test_a_text_that_cannot_fit_the_context_is_refused_without_tokenizing_it(server) -> None:
    served = server.engine
    text = "fox " * 1_000_000
    start = time.perf_counter()
    error = assert_openai_error(server.http().post(COMPLETIONS, json={"prompt": text}), 400, "prompt")
    assert error["code"] == "context_length_exceeded"
    assert str(served.max_context) in error["message"] and str(len(text)) in error["message"]
    assert time.perf_counter() - start < 2  # tokenizing it took seconds
