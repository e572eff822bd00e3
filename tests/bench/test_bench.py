"""`ingot bench`: vLLM's metric definitions, the offline engine run, and an online run against a served model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ingot.artifacts.integrity import check_artifact
from ingot.benchmark.launch import ServerFailed, running
from ingot.benchmark.report import RequestRecord, summarize
from tests.conftest import run_cli
from tests.server.helpers import eventually
from tests.server.test_serve_cli import free_port, healthy


def test_the_summary_follows_vllms_definitions_and_leaves_failures_out():
    records = [
        RequestRecord(prompt_tokens=10, output_tokens=5, ttft=0.1, e2el=0.5, itl=[0.1] * 4),
        RequestRecord(prompt_tokens=10, output_tokens=3, ttft=0.2, e2el=0.6, itl=[0.2, 0.2]),
        RequestRecord(prompt_tokens=10, error="HTTP 404: no such model"),
    ]
    summary = summarize(records, duration=2.0, settings={})
    assert (summary["requests"], summary["failures"], summary["errors"]) == (3, 1, ["HTTP 404: no such model"])
    assert (summary["prompt_tokens"], summary["output_tokens"]) == (20, 8)
    assert summary["output_throughput"] == 4.0 and summary["total_token_throughput"] == 14.0
    assert summary["request_throughput"] == 1.0
    assert summary["ttft_ms"]["median"] == pytest.approx(150)
    # TPOT per request: (e2e - TTFT) / (output tokens - 1) = 100 ms and 200 ms
    assert summary["tpot_ms"]["median"] == pytest.approx(150)
    assert summary["itl_ms"]["median"] == pytest.approx(100)  # over all 6 gaps: four of 100 ms, two of 200 ms
    assert summary["e2el_ms"]["p99"] == pytest.approx(600)


def _check(summary: dict, requests: int, input_len: int, output_len: int) -> None:
    assert summary["requests"] == requests and summary["failures"] == 0, summary["errors"]
    assert summary["output_tokens"] == requests * output_len
    assert summary["prompt_tokens"] >= requests * input_len
    assert 0 < summary["ttft_ms"]["median"] <= summary["e2el_ms"]["median"]
    assert summary["tpot_ms"]["median"] > 0 and summary["output_throughput"] > 0


def test_offline_bench_drives_the_engine_and_writes_json(compiled, tmp_path):
    out = tmp_path / "offline.json"
    result = run_cli(
        "bench", "offline", str(compiled("llama").path), "--num-prompts", "6", "--concurrency", "3",
        "--input-len", "20", "--output-len", "5", "--json", str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "output throughput" in result.stdout
    summary = json.loads(out.read_text())
    _check(summary, requests=6, input_len=20, output_len=5)
    assert summary["prompt_tokens"] == 6 * 20  # the engine counts the prompt tokens exactly
    key = compiled("llama").key
    assert summary["settings"]["weight_format"] == "fp32" and f"artifact {key}  weights fp32" in result.stdout


def test_online_bench_streams_from_a_server_on_both_endpoints_and_counts_failures(compiled, tmp_path):
    path = compiled("llama").path
    model = check_artifact(path).model.name
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "ingot.cli", "serve", str(path), "--port", str(port), "--no-compile"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        assert eventually(lambda: healthy(url), timeout=120)

        def bench(*args: str) -> dict:
            out = tmp_path / "online.json"
            result = run_cli(
                "bench", "online", "--base-url", url, "--tokenizer", str(path), "--num-prompts", "4",
                "--concurrency", "2", "--input-len", "12", "--output-len", "4", "--json", str(out), *args,
            )
            assert result.returncode == 0, result.stderr
            return json.loads(out.read_text())

        summary = bench("--model", model)
        _check(summary, requests=4, input_len=12, output_len=4)
        # what the server's /v1/models says of the artifact it serves
        assert (summary["settings"]["artifact"], summary["settings"]["weight_format"]) == (path.name, "fp32")
        _check(bench("--model", model, "--endpoint", "/v1/chat/completions"), requests=4, input_len=12, output_len=4)
        wrong = bench("--model", "no-such-model")
        assert wrong["failures"] == 4 and wrong["output_tokens"] == 0
        assert any(error.startswith("HTTP 404") for error in wrong["errors"])
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_a_server_that_exits_at_start_is_named_by_its_arguments_with_its_log_tail(capsys):
    command = [sys.executable, "-c", "import sys; print('no artifact smollm2-x'); sys.exit(3)", "smollm2-x"]
    with pytest.raises(ServerFailed, match=r"^python\S* -c .* smollm2-x exited with 3$"):
        with running(command, free_port()):
            pass
    assert "no artifact smollm2-x" in capsys.readouterr().err
