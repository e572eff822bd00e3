"""The connection itself: a client that sends its request slowly is cut off, idle connections close, and the
number of open connections is capped; and the listening socket is bound (or refused in one line) before serving."""

from __future__ import annotations

import json
import socket
import time

import pytest

from ingot.errors import OptionError
from ingot.server.run import bind_socket
from tests.server.test_errors import assert_reveals_nothing

HEAD = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def trickle(sock: socket.socket, data: bytes, every: float) -> float:
    """Send ``data`` a byte at a time; the seconds until the server closed the connection."""
    start = time.monotonic()
    try:
        for byte in data:
            sock.sendall(bytes([byte]))
            time.sleep(every)
    except OSError:  # the server has closed it
        pass
    return time.monotonic() - start


def status_and_error(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert_reveals_nothing(body.decode())
    return int(head.split()[1]), json.loads(body)["error"]


@pytest.fixture(scope="module")
def impatient(serve):
    return serve(read_timeout=1, timeout_keep_alive=1, max_connections=4)


def test_a_body_sent_a_byte_at_a_time_is_cut_off_with_408(impatient) -> None:
    """A body of one byte every 2 s used to be held indefinitely."""
    body = json.dumps({"prompt": "Hello", "max_tokens": 1}).encode()
    with connect(impatient.url) as sock:
        sock.sendall(HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode())
        trickle(sock, body, every=0.25)
        status, error = status_and_error(read_until_closed(sock))
    assert status == 408 and error["code"] == "request_timeout"


def test_headers_sent_a_byte_at_a_time_are_cut_off_with_408(impatient) -> None:
    with connect(impatient.url) as sock:
        took = trickle(sock, HEAD * 10, every=0.25)
        status, error = status_and_error(read_until_closed(sock))
    assert status == 408 and error["code"] == "request_timeout"
    assert took < 5


def test_a_connection_that_sends_nothing_is_closed(impatient) -> None:
    with connect(impatient.url) as sock:
        start = time.monotonic()
        status, _ = status_and_error(read_until_closed(sock))
        assert status == 408 and time.monotonic() - start < 5


def test_an_idle_keep_alive_connection_is_closed(impatient) -> None:
    with connect(impatient.url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        assert read_until_closed(sock) == b""  # closed by the server, with nothing more said
        assert time.monotonic() - start < 5


def test_connections_beyond_the_cap_are_answered_503_and_closed(impatient) -> None:
    held = [connect(impatient.url) for _ in range(4)]
    try:
        time.sleep(0.2)  # accepted
        with connect(impatient.url) as extra:
            status, error = status_and_error(read_until_closed(extra))
        assert status == 503 and error["type"] == "server_error"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    with connect(impatient.url) as sock:  # room again
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_bind_socket_refuses_a_busy_port_a_bad_port_and_a_bad_host_in_one_line() -> None:
    sock = bind_socket("127.0.0.1", _free_port())
    try:
        port = sock.getsockname()[1]
        sock.listen()
        with pytest.raises(OptionError, match=f"^port {port} on 127.0.0.1 is in use$"):
            bind_socket("127.0.0.1", port)
    finally:
        sock.close()
    for port in (0, 65536, 99999):
        with pytest.raises(OptionError, match="--port must be in 1..65535"):
            bind_socket("127.0.0.1", port)
    with pytest.raises(OptionError, match="--host"):
        bind_socket("no-such-host.invalid", 8000)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
