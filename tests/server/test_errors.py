"""Every failure answers in OpenAI's error shape with the right status, and never shows the server's files or code."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from ingot.artifacts.integrity import check_artifact
from ingot.errors import OptionError
from ingot.runtime import sampler as sampler_module
from ingot.runtime.engine import Engine
from ingot.server.app import create_app
from ingot.server.settings import ServerSettings
from tests.server.helpers import eventually

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello"}]


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    assert_reveals_nothing(response.text)
    return error


def assert_reveals_nothing(text: str) -> None:
    for leak in ("Traceback", 'File "', ".py", "/work", "site-packages", "/tmp", "/root", "/home"):
        assert leak not in text


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (COMPLETIONS, {"prompt": "hi", "max_tokens": 4, "temprature": 0.5}, "temprature"),
        (CHAT, {"messages": HELLO, "max_tokens": 4, "foo": 1}, "foo"),
        (CHAT, {"messages": [{"role": "user", "content": "hi", "extra": 1}]}, "messages.0.extra"),
        (COMPLETIONS, {"prompt": "hi", "temperature": -1}, "temperature"),
        (COMPLETIONS, {"prompt": "hi", "top_p": 0}, "top_p"),
        (COMPLETIONS, {"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        (COMPLETIONS, {"prompt": "hi", "n": 0}, "n"),
        (COMPLETIONS, {"prompt": "hi", "logprobs": 21}, "logprobs"),
        (COMPLETIONS, {"prompt": "hi", "logit_bias": {"x": 1}}, "logit_bias"),
        (COMPLETIONS, {"prompt": "hi", "logit_bias": {"999999": 1}}, "logit_bias"),
        (COMPLETIONS, {"prompt": "hi", "stop_token_ids": [-1]}, "stop_token_ids"),
        (COMPLETIONS, {"prompt": "hi", "max_tokens": "many"}, "max_tokens"),
        (COMPLETIONS, {"prompt": [999999]}, "prompt"),
        (COMPLETIONS, {"prompt": []}, "prompt"),
        (COMPLETIONS, {"prompt": ""}, "prompt"),
        (COMPLETIONS, {"prompt": "hi", "echo": True, "prompt_logprobs": 21}, "prompt_logprobs"),
        (COMPLETIONS, {"prompt": "hi", "suffix": "end"}, "suffix"),
        (COMPLETIONS, {"prompt": "hi", "best_of": 2}, "best_of"),
        (COMPLETIONS, {"prompt": "hi", "stream_options": {"include_usage": True}}, "stream_options"),
        (CHAT, {"messages": []}, "messages"),
        (CHAT, {"messages": [{"role": "tool", "content": "x"}]}, None),
        (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, None),
        (CHAT, {"messages": HELLO, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        (CHAT, {"messages": HELLO, "tool_choice": "auto"}, "tool_choice"),
        (CHAT, {"messages": HELLO, "functions": [{"name": "f"}]}, "functions"),
        (CHAT, {"messages": HELLO, "response_format": {"type": "json_schema"}}, "response_format"),
        (CHAT, {"messages": HELLO, "top_logprobs": 2}, "top_logprobs"),
        (CHAT, {"messages": HELLO, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        (CHAT, {"max_tokens": 4}, "messages"),
        # Strict types, as OpenAI's: these were taken as true, as token ids, as a number.
        (COMPLETIONS, {"prompt": "hi", "stream": "yes"}, "stream"),
        (CHAT, {"messages": HELLO, "stream": 1}, "stream"),
        (COMPLETIONS, {"prompt": [True, False]}, "prompt.0"),
        (COMPLETIONS, {"prompt": [[1, True]]}, "prompt.0.1"),
        (COMPLETIONS, {"prompt": "hi", "temperature": "0.5"}, "temperature"),
        (CHAT, {"messages": HELLO, "logprobs": "true"}, "logprobs"),
        (COMPLETIONS, {"prompt": ["hi", 3]}, "prompt.1"),
    ],
)
def test_invalid_or_unsupported_parameters_are_400(server, path, body, param):
    assert_openai_error(server.http().post(path, json=body), 400, param)


def test_malformed_json_is_400(server):
    for raw in (b"{not json", b'{"prompt": "hi",}', b""):
        response = server.http().post(COMPLETIONS, content=raw, headers={"Content-Type": "application/json"})
        assert_openai_error(response, 400)


def test_context_overflow_is_400_and_names_both_lengths(server):
    prompt = "The quick brown fox jumps over the lazy dog. " * 40
    prompt_tokens = len(server.engine.tokenize(prompt))
    assert prompt_tokens > server.engine.max_context
    error = assert_openai_error(server.http().post(COMPLETIONS, json={"prompt": prompt, "max_tokens": 4}), 400)
    assert error["code"] == "context_length_exceeded"
    assert str(prompt_tokens) in error["message"] and str(server.engine.max_context) in error["message"]
    chat = server.http().post(CHAT, json={"messages": [{"role": "user", "content": prompt}]})
    assert assert_openai_error(chat, 400)["code"] == "context_length_exceeded"


def test_a_refused_request_is_not_counted_as_aborted(server):
    def aborted() -> float:
        try:
            return server.metric("vllm:request_success_total", finished_reason="abort")
        except KeyError:  # none yet
            return 0.0

    before = aborted()
    too_long = "The quick brown fox jumps over the lazy dog. " * 40
    # The first prompt is added to the engine before the second is refused: it is taken back, not aborted.
    response = server.http().post(COMPLETIONS, json={"prompt": ["Hello", too_long], "max_tokens": 4})
    assert assert_openai_error(response, 400)["code"] == "context_length_exceeded"
    assert aborted() == before


def test_the_openai_client_raises_bad_request(client, server):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=server.model, messages=HELLO, temperature=-1)
    assert raised.value.body["param"] == "temperature"


def test_missing_or_wrong_api_key_is_401(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "test-key"}):
        response = httpx.post(f"{server.url}{COMPLETIONS}", json={"prompt": "hi"}, headers=headers)
        assert_openai_error(response, 401)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()


def test_unknown_model_and_route_are_404_and_wrong_method_405(server):
    unknown = server.http().post(CHAT, json={"model": "gpt-4", "messages": HELLO})
    assert assert_openai_error(unknown, 404, "model")["code"] == "model_not_found"
    assert_openai_error(server.http().post("/v1/engines", json={}), 404)
    assert_openai_error(server.http().get("/nothing/here"), 404)
    wrong_method = server.http().get(CHAT)
    assert_openai_error(wrong_method, 405)
    assert wrong_method.headers["allow"] == "POST"


@pytest.fixture(scope="module")
def small(serve):
    """A server with a 2 KiB body limit and room for one request in flight."""
    return serve(max_request_bytes=2048, max_queue=1)


def test_bodies_over_the_limit_are_413_by_length_or_by_chunks(small):
    body = json.dumps({"prompt": "x" * 4000}).encode()
    assert_openai_error(httpx.post(f"{small.url}{COMPLETIONS}", content=body), 413)

    def chunks():
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    chunked = httpx.post(f"{small.url}{COMPLETIONS}", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in chunked.request.headers
    assert_openai_error(chunked, 413)


def test_a_full_queue_is_429_with_retry_after(small):
    long_request = {"prompt": "Hello", "max_tokens": 200, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=small.url, timeout=30) as http:
        with http.stream("POST", COMPLETIONS, json=long_request) as stream:
            lines = stream.iter_lines()  # kept: a discarded iterator would close the connection
            next(lines)  # the first request is in flight
            refused = http.post(COMPLETIONS, json={"prompt": "Hello", "max_tokens": 2})
            assert_openai_error(refused, 429)
            assert int(refused.headers["retry-after"]) >= 1
        assert_openai_error(http.post(COMPLETIONS, json={"prompt": "Hello", "n": 2}), 400, "n")  # could never fit
        assert_openai_error(http.post(COMPLETIONS, json={"prompt": ["Hello", "Hi"]}), 400, "prompt")  # nor these
        # The dropped stream gives its slot back (as soon as the server sees the disconnect).
        assert eventually(lambda: http.post(COMPLETIONS, json={"prompt": "Hello", "max_tokens": 2}).status_code == 200)


class _ExplodingEngine:
    """Stands in for an engine whose tokenizer fails with a message naming a server file: a bug, so a 500."""

    model_name = "boom"
    max_context = 64

    def tokenize(self, prompt):
        raise RuntimeError('File "/srv/ingot/secret.py", line 3: something broke')


def test_an_unexpected_error_is_a_generic_500_and_is_logged_once(caplog):
    app = create_app({"boom": _ExplodingEngine()}, ServerSettings())

    async def call() -> httpx.Response:
        # The app must not re-raise either: uvicorn would log the same traceback a second time.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.post(COMPLETIONS, json={"prompt": "hi"})

    response = asyncio.run(call())
    error = assert_openai_error(response, 500)
    assert error["type"] == "server_error" and "secret" not in response.text
    assert [r.name for r in caplog.records if r.exc_info] == ["ingot.server"]  # the traceback stays in the log, once


def test_a_model_whose_warm_up_fails_never_turns_ready(compiled, caplog):
    path = compiled("llama").path
    engine = Engine(path, check_artifact(path), num_blocks=64)

    def broken(*args: object) -> None:
        raise RuntimeError("the program failed")

    engine.runner.prefill = broken  # the engine fails its first step, as a broken artifact would
    try:
        with TestClient(create_app({engine.model_name: engine}, ServerSettings())) as http:
            assert eventually(lambda: any("warm-up failed" in r.getMessage() for r in caplog.records))
            assert http.get("/health").status_code == 503
    finally:
        engine.shutdown()


def test_strict_types_still_take_what_the_openai_client_sends(client, server):
    """Integers where floats go (temperature=0, a logit_bias of ints), nulls for defaults, booleans."""
    response = client.completions.create(
        model=server.model, prompt=[1, 2, 3], max_tokens=2, temperature=0, top_p=1, logit_bias={"5": 1},
        stream=False, seed=None, presence_penalty=0, stop=None, user="u",
    )  # fmt: skip
    assert response.usage.completion_tokens == 2
    chat = client.chat.completions.create(model=server.model, messages=HELLO, max_tokens=2, temperature=1, n=2)
    assert len(chat.choices) == 2


def test_json_without_numbers_for_nan_or_infinity_is_400(server):
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        raw = b'{"prompt": "hi", "temperature": ' + constant + b"}"
        response = server.http().post(COMPLETIONS, content=raw, headers={"Content-Type": "application/json"})
        assert "not valid JSON" in assert_openai_error(response, 400)["message"]


def test_a_lone_surrogate_in_the_model_or_a_field_name_is_400_not_500(server):
    """The 404 message echoed the model name, which UTF-8 cannot encode: a 500."""
    for raw in (b'{"model": "\\ud800", "prompt": "hi"}', b'{"prompt": "hi", "\\udc00x": 1}'):
        response = server.http().post(COMPLETIONS, content=raw, headers={"Content-Type": "application/json"})
        assert_openai_error(response, 400)
    chat = b'{"model": "gpt\\ud83d", "messages": [{"role": "user", "content": "hi"}]}'
    response = server.http().post(CHAT, content=chat, headers={"Content-Type": "application/json"})
    assert assert_openai_error(response, 400, "model")["code"] == "invalid_model_name"


def test_the_bearer_scheme_is_case_insensitive(server):
    for scheme in ("bearer", "BEARER", "Bearer"):
        headers = {"Authorization": f"{scheme} {server.settings.api_key}"}
        assert httpx.get(f"{server.url}/v1/models", headers=headers).status_code == 200
    for header in ("Basic test-key", "bearer", "bearertest-key", "Bearer test-key2"):
        assert_openai_error(httpx.get(f"{server.url}/v1/models", headers={"Authorization": header}), 401)


@pytest.mark.parametrize(
    ("settings", "option"),
    [
        (dict(api_key=""), "--api-key"),
        (dict(api_key="  "), "--api-key"),
        (dict(max_stop_sequences=0), "--max-stop-sequences"),
        (dict(max_logit_bias=0), "--max-logit-bias"),
        (dict(timeout_keep_alive=0), "--timeout-keep-alive"),
        (dict(read_timeout=float("nan")), "--read-timeout"),
        (dict(read_timeout=float("inf")), "--read-timeout"),
        (dict(max_connections=0), "--max-connections"),
        (dict(max_image_pixels=0), "--max-image-pixels"),
        (dict(shutdown_timeout=float("inf")), "--shutdown-timeout"),
    ],
)
def test_server_settings_refuse_empty_keys_and_limits_below_one(settings, option):
    with pytest.raises(OptionError, match=option):
        ServerSettings(**settings)


def test_a_request_the_engine_fails_gets_a_500_naming_it_and_other_clients_never_notice(server, monkeypatch):
    """Sampling that raises fails its own request (the engine once aborted every request in flight on it)."""

    def broken(row, request):
        raise RuntimeError("sampling broke at /work/secret.py")

    greedy = {"prompt": "The quick brown fox", "max_tokens": 24, "temperature": 0, "ignore_eos": True}
    expected = server.http().post(COMPLETIONS, json=greedy).json()["choices"][0]["text"]
    monkeypatch.setattr(sampler_module, "_sample_row", broken)  # rows that sample (not greedy ones) now fail
    with server.http() as http, http.stream("POST", COMPLETIONS, json={**greedy, "stream": True}) as canary:
        failed = http.post(COMPLETIONS, json={"prompt": "hi", "max_tokens": 8, "temperature": 0.8})
        error = assert_openai_error(failed, 500)
        assert error["type"] == "server_error" and "sampling" in error["message"] and "secret" not in error["message"]
        with server.http() as other, other.stream(
            "POST", COMPLETIONS, json={"prompt": "hi", "max_tokens": 8, "temperature": 0.8, "stream": True}
        ) as stream:
            events = [line for line in stream.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        streamed_error = json.loads(events[-2][len("data: ") :])["error"]
        assert streamed_error["type"] == "server_error" and "sampling" in streamed_error["message"]
        assert_reveals_nothing("".join(events))
        chunks = [json.loads(line[len("data: ") :]) for line in canary.iter_lines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert server.metric("vllm:request_success_total", finished_reason="error") >= 2
