"""`ingot serve` as a user runs it: refusals in one line, and a graceful exit on SIGTERM."""

from __future__ import annotations

import gc
import json
import shutil
import signal
import socket
import subprocess
import sys

import httpx
import uvicorn

from ingot.server import run
from ingot.server.settings import ServerSettings
from tests.conftest import run_cli
from tests.server.helpers import eventually


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0]


def test_no_compile_refuses_a_missing_artifact_in_one_line(tmp_path, tiny_model):
    assert_one_line_error(run_cli("serve", "no-such-model-or-key", "--no-compile", cache_dir=tmp_path), "no-such")
    # A real model that was never compiled into this cache: refused, not compiled.
    model = str(tiny_model("llama"))
    assert_one_line_error(run_cli("serve", model, "--no-compile", cache_dir=tmp_path), "--no-compile")
    assert not (tmp_path / "artifacts").exists()


def test_an_artifact_for_another_target_is_refused_naming_it(tmp_path, compiled):
    artifact = shutil.copytree(compiled("llama").path, tmp_path / "artifact")
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["target"] = "p150"
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(run_cli("serve", str(artifact), "--no-compile", cache_dir=tmp_path), "p150")


def test_a_token_cap_below_one_is_refused_in_one_line(tmp_path, compiled):
    artifact = str(compiled("llama").path)
    result = run_cli("serve", artifact, "--max-num-batched-tokens", "0", cache_dir=tmp_path)
    assert_one_line_error(result, "--max-num-batched-tokens")


def test_sizes_below_one_are_refused_before_any_model_loads(tmp_path):
    for option in ("--max-queue", "--max-request-bytes", "--max-image-pixels"):
        assert_one_line_error(run_cli("serve", "no-such-model", option, "0", cache_dir=tmp_path), option)
    timeout = run_cli("serve", "no-such-model", "--shutdown-timeout", "-1", cache_dir=tmp_path)
    assert_one_line_error(timeout, "--shutdown-timeout must be 0 or more")
    result = run_cli("serve", "no-such-model", "--kv-cache-gb", "0", cache_dir=tmp_path)
    assert result.returncode == 2 and "--kv-cache-gb: must be more than 0" in result.stderr


def test_two_models_with_one_name_are_refused(tmp_path, compiled):
    artifact = str(compiled("llama").path)
    assert_one_line_error(run_cli("serve", artifact, artifact, cache_dir=tmp_path), "two models are named")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health").status_code == 200
    except httpx.TransportError:
        return False


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(tmp_path, compiled):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "ingot.cli", "serve", str(compiled("llama").path), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--cache-dir", str(tmp_path), "--shutdown-timeout", "30"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert eventually(lambda: healthy(url), timeout=180), "ingot serve did not turn healthy"
        request = {"prompt": "Once upon a time", "max_tokens": 200, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=request, timeout=60) as response:
            lines = response.iter_lines()
            next(lines)
            process.send_signal(signal.SIGTERM)
            events = [line for line in lines if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert json.loads(events[-2][len("data: ") :])["choices"][0]["finish_reason"] == "length"
        assert process.wait(timeout=60) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serving_a_detector_that_was_never_compiled_says_how_to_compile_it(tmp_path):
    assert_one_line_error(run_cli("serve", "yolov4", cache_dir=tmp_path), "yolov4 is not compiled", "--weights")


def test_what_the_server_loaded_is_left_out_of_garbage_collection(monkeypatch):
    """A full collection over torch, transformers and the models takes ~70 ms with the interpreter lock held: a
    stall of every stream. What exists when serving starts lives as long as the server, so it is frozen."""
    loaded = len(gc.get_objects())
    frozen_when_serving = []
    monkeypatch.setattr(run, "create_app", lambda *args: object())  # no model needed: uvicorn never starts it
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: frozen_when_serving.append(gc.get_freeze_count())
    )
    try:
        with run.bind_socket("127.0.0.1", free_port()) as sock:
            run.serve({}, ServerSettings(), sock)
    finally:
        gc.unfreeze()
    assert frozen_when_serving and frozen_when_serving[0] > 0.9 * loaded  # (a few temporaries are gone by then)
