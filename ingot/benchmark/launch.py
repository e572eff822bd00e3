"""Start a server process (`ingot serve`, llama-server) on a free port of 127.0.0.1 and wait until it is ready:
the one way benchmarks, the docs' screenshot script and the tests do it."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

LOG_TAIL_LINES = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    """Whether the server at ``url`` answers /health with 200 (ingot: after its warm-up)."""
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


class ServerFailed(RuntimeError):
    """The server exited or did not turn healthy in time."""


@contextmanager
def running(
    command: list[str], port: int, env: dict[str, str] | None = None, timeout: float = 1800
) -> Iterator[psutil.Process]:
    """The server ``command`` starts on ``port``, once healthy; stopped on leaving. If it fails to start, or the
    body fails, its last output lines go to stderr: a server's log is where the reason is."""
    url = f"http://127.0.0.1:{port}"
    name = shlex.join([Path(command[0]).name, *command[1:]])  # what it serves is in the arguments, not in "python"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + timeout
            while not healthy(url):
                if process.poll() is not None:
                    raise ServerFailed(f"{name} exited with {process.returncode}")
                if time.monotonic() > deadline:
                    raise ServerFailed(f"{name} was not healthy after {timeout:.0f} s")
                time.sleep(1)
            yield psutil.Process(process.pid)
        except BaseException:
            log.seek(0)
            tail = log.read().decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            print(f"{name} failed; its last output lines:", *tail, sep="\n", file=sys.stderr)
            raise
        finally:
            process.terminate()
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
