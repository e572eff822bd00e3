"""`ingot serve` as a user runs it: refusals in one line, and a graceful exit on SIGTERM."""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import httpx
import psutil
import pytest
import uvicorn

from ingot.benchmark.launch import free_port, healthy
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
    port = str(free_port())
    result = run_cli("serve", "no-such-model-or-key", "--no-compile", "--port", port, cache_dir=tmp_path)
    assert_one_line_error(result, "no-such")
    # A real model that was never compiled into this cache: refused, not compiled.
    model = str(tiny_model("llama"))
    assert_one_line_error(run_cli("serve", model, "--no-compile", "--port", port, cache_dir=tmp_path), "--no-compile")
    assert not (tmp_path / "artifacts").exists()


def test_an_artifact_for_another_target_is_refused_naming_it(tmp_path, compiled):
    artifact = shutil.copytree(compiled("llama").path, tmp_path / "artifact")
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["target"] = "p150"
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("serve", str(artifact), "--no-compile", "--port", str(free_port()), cache_dir=tmp_path)
    assert_one_line_error(result, "p150")


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
    result = run_cli("serve", artifact, artifact, "--port", str(free_port()), cache_dir=tmp_path)
    assert_one_line_error(result, "two models are named")


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
    result = run_cli("serve", "yolov4", "--port", str(free_port()), cache_dir=tmp_path)
    assert_one_line_error(result, "yolov4 is not compiled", "--weights")


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


NUMBER_FLAGS = {  # flag: nonsense values, each refused before any model loads
    "--port": ("0", "-1", "99999", "http"),
    "--max-queue": ("0", "-5"),
    "--max-request-bytes": ("0",),
    "--max-num-batched-tokens": ("0", "-1"),
    "--max-image-pixels": ("0",),
    "--max-stop-sequences": ("0", "-1", "four"),
    "--max-logit-bias": ("0", "-1"),
    "--max-connections": ("0", "-1"),
    "--timeout-keep-alive": ("0", "-1", "nan", "inf"),
    "--read-timeout": ("0", "-1", "nan"),
    "--kv-cache-gb": ("0", "nan"),
    "--shutdown-timeout": ("-1", "nan"),
}


def test_every_number_flag_refuses_nonsense_in_one_line_before_any_model_loads(tmp_path, compiled):
    artifact = str(compiled("llama").path)  # would load (and serve) if a check were missing
    for flag, values in NUMBER_FLAGS.items():
        for value in values:
            result = run_cli("serve", artifact, flag, value, cache_dir=tmp_path, timeout=60)
            assert_one_line_error(result, flag)


def test_the_serve_flags_reach_the_server_settings(monkeypatch):
    monkeypatch.delenv("INGOT_API_KEY", raising=False)
    from ingot.cli import build_parser
    from ingot.cli.serve import server_settings
    from ingot.server import settings

    defaults = server_settings(build_parser().parse_args(["serve"]))
    assert (defaults.max_stop_sequences, defaults.max_logit_bias) == (
        settings.DEFAULT_MAX_STOP_SEQUENCES, settings.DEFAULT_MAX_LOGIT_BIAS,
    )  # fmt: skip
    assert (defaults.timeout_keep_alive, defaults.read_timeout, defaults.max_connections) == (
        settings.DEFAULT_TIMEOUT_KEEP_ALIVE, settings.DEFAULT_READ_TIMEOUT, settings.DEFAULT_MAX_CONNECTIONS,
    )  # fmt: skip
    assert defaults.api_key is None and defaults.playground
    flags = ["--max-stop-sequences", "2", "--max-logit-bias", "10", "--timeout-keep-alive", "1.5",
             "--read-timeout", "7", "--max-connections", "9", "--max-image-pixels", "1000"]  # fmt: skip
    given = server_settings(build_parser().parse_args(["serve", *flags]))
    assert (given.max_stop_sequences, given.max_logit_bias, given.timeout_keep_alive) == (2, 10, 1.5)
    assert (given.read_timeout, given.max_connections, given.max_image_pixels) == (7.0, 9, 1000)
    assert not server_settings(build_parser().parse_args(["serve", "--no-playground"])).playground


def test_a_busy_port_is_refused_before_any_model_compiles(tmp_path, tiny_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", str(tiny_model("llama")), "--port", str(port), cache_dir=tmp_path, timeout=120)
    assert_one_line_error(result, str(port), "in use")
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "building").exists()


def run_serve(*args: str, env: dict[str, str], **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ingot.cli", "serve", *args], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, **env), **popen,
    )  # fmt: skip


def test_an_empty_api_key_is_refused_from_the_flag_the_environment_or_a_file(tmp_path):
    empty = tmp_path / "empty-key"
    empty.write_text("\n  \nsecret\n")  # the first line is the key: blank
    port = ["--port", str(free_port()), "--cache-dir", str(tmp_path)]
    assert_one_line_error(run_serve("no-such-model", "--api-key", "", *port, env={}), "--api-key", "empty")
    assert_one_line_error(run_serve("no-such-model", *port, env={"INGOT_API_KEY": " "}), "INGOT_API_KEY", "empty")
    assert_one_line_error(run_serve("no-such-model", "--api-key-file", str(empty), *port, env={}), "empty")
    missing = run_serve("no-such-model", "--api-key-file", str(tmp_path / "nope"), *port, env={})
    assert_one_line_error(missing, "--api-key-file", "nope")


@pytest.mark.parametrize("given", ["environment", "file"])
def test_the_api_key_need_not_be_on_the_command_line(given, tmp_path, compiled):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key_file = tmp_path / "key"
    key_file.write_text("from-a-file\n")
    env = {"INGOT_API_KEY": "from-the-environment"}
    args = ["--api-key-file", str(key_file)] if given == "file" else []
    key = "from-a-file" if given == "file" else "from-the-environment"
    process = subprocess.Popen(
        [sys.executable, "-m", "ingot.cli", "serve", str(compiled("llama").path), "--port", str(port), *args,
         "--cache-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, **env),
    )  # fmt: skip
    try:
        assert eventually(lambda: healthy(url), timeout=180), "ingot serve did not turn healthy"
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert key not in " ".join(psutil.Process(process.pid).cmdline())
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_a_model_that_fails_to_compile_on_a_miss_is_refused_in_one_line(tmp_path, tiny_model):
    """`ingot serve MODEL` compiles a missing artifact in a child process (whose memory is given back before
    serving); the child's failure is the server's, with the child's one-line reason and nothing stored."""
    model = str(tiny_model("llama"))  # 1024 positions: the default options' 2048-token context does not fit
    result = run_cli("serve", model, "--port", str(free_port()), cache_dir=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "exceeds the model's 1024 positions" in errors[0], result.stderr
    assert not any((tmp_path / "artifacts").glob("*"))
