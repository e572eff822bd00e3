"""One access-log line per request, with its id, model, tokens and timings, and the prompt only when asked for."""

from __future__ import annotations

import logging
import socket

import pytest

from tests.server.helpers import eventually

PROMPT = "A private prompt about foxes"


def access_lines(caplog: pytest.LogCaptureFixture, request_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ingot.access" and request_id in r.getMessage()]


def test_each_request_is_logged_once_without_its_prompt(server, client, caplog):
    caplog.set_level(logging.INFO, logger="ingot.access")
    response = client.completions.create(model=server.model, prompt=PROMPT, max_tokens=3)
    assert eventually(lambda: access_lines(caplog, response.id))  # written once the response has been sent
    [line] = access_lines(caplog, response.id)
    assert f"model={server.model}" in line and '"POST /v1/completions" 200' in line
    assert f"prompt_tokens={response.usage.prompt_tokens} completion_tokens=3" in line
    assert "ttft=0." in line and "total=" in line
    assert "foxes" not in line


def test_log_prompts_adds_the_prompt(serve, caplog):
    caplog.set_level(logging.INFO, logger="ingot.access")
    logging_server = serve(log_prompts=True)
    response = logging_server.client().completions.create(model=logging_server.model, prompt=PROMPT, max_tokens=2)
    assert eventually(lambda: access_lines(caplog, response.id))
    assert PROMPT in access_lines(caplog, response.id)[0]


def test_a_client_that_leaves_mid_body_is_logged_499_not_500(server, caplog):
    """Nothing failed on the server's side, so the log must not say it did."""
    caplog.set_level(logging.INFO, logger="ingot.access")
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        key = "".join(f"{name}: {value}\r\n" for name, value in server.headers.items())
        sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\n{key}Content-Length: 1000\r\n\r\n{{".encode())
    assert eventually(lambda: access_lines(caplog, '"POST /v1/completions" 499'))
    assert not access_lines(caplog, '"POST /v1/completions" 500')
