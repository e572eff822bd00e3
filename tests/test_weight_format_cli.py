"""`--weight-format` as a user meets it: one-line refusals, `ingot ls`/`inspect`/`verify` showing the format, and two
artifacts of one model served together, told apart by /v1/models and named by --served-model-name."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ingot.artifacts.cpu_isa import host_flags
from ingot.cli import main
from ingot.server import run
from ingot.server.app import create_app
from tests.conftest import run_cli
from tests.server.test_serve_cli import assert_one_line_error, free_port


@pytest.fixture(scope="module")
def bfp8(compiled):
    return compiled("llama", weight_format="bfp8")


def test_a_bad_weight_format_is_a_one_line_error(tiny_model, tmp_path):
    model = str(tiny_model("llama"))
    assert_one_line_error(run_cli("compile", model, "--weight-format", "bfp3", cache_dir=tmp_path), "'bfp3'")
    result = run_cli("cache-key", model, "--weight-format", "performance", "--target", "p150", cache_dir=tmp_path)
    assert_one_line_error(result, "--weight-format performance on p150 needs per-tensor formats")
    result = run_cli("compile", "yolov4", "--random-weights", "--weight-format", "bfp8", cache_dir=tmp_path)
    assert_one_line_error(result, "--weight-format is an option for language models")
    assert not (tmp_path / "artifacts").exists()


def test_ls_inspect_and_verify_show_the_weight_format(bfp8, session_store):
    listed = run_cli("ls", cache_dir=session_store.root)
    row = next(line for line in listed.stdout.splitlines() if line.strip().startswith(bfp8.key))
    assert " bfp8 " in row
    inspected = run_cli("inspect", str(bfp8.path), cache_dir=session_store.root).stdout
    assert "weights   bfp8: linears 15 bfp8; other tensors rounded to bf16 (5)" in inspected
    verified = run_cli("verify", str(bfp8.path), cache_dir=session_store.root)
    assert verified.returncode == 0, verified.stderr
    # what the compile measured against the original weights, then the re-run against the decoded ones
    printed = " ".join(verified.stdout.split())  # table titles wrap
    assert printed.index("against the original float32 weights") < printed.index("on the artifact's decoded weights")
    assert "weights bfp8" in printed and "tt-metal reports (Llama-3.1-8B)" in printed


def test_two_artifacts_of_one_model_are_served_under_the_names_given(compiled, bfp8, monkeypatch, tmp_path):
    fp32 = compiled("llama")
    seen = {}

    def serve(engines, settings, sock, detectors):  # instead of uvicorn: ask the app in-process, then stop
        sock.close()
        try:
            seen.update(asyncio.run(_ask(create_app(engines, settings, detectors))))
        finally:
            for engine in engines.values():
                engine.shutdown()

    monkeypatch.setattr(run, "serve", serve)
    names = ["--served-model-name", "tiny-fp32", "--served-model-name", "tiny-bfp8"]
    arguments = ["serve", str(fp32.path), str(bfp8.path), *names, "--kv-cache-gb", "0.01", "--port", str(free_port())]
    assert main([*arguments, "--cache-dir", str(tmp_path)]) == 0
    cards = {card["id"]: card for card in seen["models"]}
    assert set(cards) == {"tiny-fp32", "tiny-bfp8"}
    model = fp32.manifest.model.name
    assert cards["tiny-fp32"]["root"] == cards["tiny-bfp8"]["root"] == model
    for name, result, fmt in (("tiny-fp32", fp32, "fp32"), ("tiny-bfp8", bfp8, "bfp8")):
        expected = {
            "artifact": result.key, "model": model, "target": "cpu", "weight_format": fmt, "activation_dtype": "fp32"
        }
        assert cards[name]["metadata"] == expected
    assert seen["answer"]["model"] == "tiny-bfp8"


def test_two_artifacts_of_one_model_need_names_one_per_model(compiled, bfp8, tmp_path):
    paths = [str(compiled("llama").path), str(bfp8.path)]
    port = ["--port", str(free_port())]
    unnamed = run_cli("serve", *paths, *port, cache_dir=tmp_path)
    assert_one_line_error(unnamed, "two models are named", "--served-model-name")
    one_name = run_cli("serve", *paths, "--served-model-name", "a", *port, cache_dir=tmp_path)
    assert_one_line_error(one_name, "--served-model-name: give one name per MODEL (2 models, 1 names)")


async def _ask(app) -> dict:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        models = (await http.get("/v1/models")).json()["data"]
        body = {"model": "tiny-bfp8", "prompt": "Hi", "max_tokens": 2}
        return {"models": models, "answer": (await http.post("/v1/completions", json=body)).json()}


def test_serve_compiles_a_model_on_a_miss_with_the_weight_format_given(tiny_model, tmp_path):
    from ingot.compile.options import CompileOptions
    from ingot.compile.pipeline import cache_key
    from ingot.models.source import resolve_source

    model = str(tiny_model("llama"))
    key = cache_key(resolve_source(model).digests(), CompileOptions.parse(weight_format="bfp8"))
    port = ["--port", str(free_port()), "--no-compile"]
    result = run_cli("serve", model, "--weight-format", "bfp8", *port, cache_dir=tmp_path)
    assert_one_line_error(result, f"not compiled (no artifact {key})")
    assert_one_line_error(run_cli("serve", model, "--weight-format", "fp16", *port, cache_dir=tmp_path), "'fp16'")


def test_serve_names_the_artifact_with_the_activation_dtype_given(tiny_model, tmp_path):
    """`ingot serve MODEL --weight-format F --activation-dtype D` means the artifact compiled with both (the key
    differs from F's alone); D without a bfloat16-exact F is refused in one line, on any CPU."""
    from ingot.compile.options import CompileOptions
    from ingot.compile.pipeline import cache_key
    from ingot.models.source import resolve_source

    model = str(tiny_model("llama"))
    port = ["--port", str(free_port()), "--no-compile"]
    if "avx512_bf16" in host_flags():
        digests = resolve_source(model).digests()
        key = cache_key(digests, CompileOptions.parse(weight_format="bfp8", activation_dtype="bf16"))
        assert key != cache_key(digests, CompileOptions.parse(weight_format="bfp8"))
        result = run_cli("serve", model, "--weight-format", "bfp8", "--activation-dtype", "bf16", *port,
                         cache_dir=tmp_path)  # fmt: skip
        assert_one_line_error(result, f"not compiled (no artifact {key})")
    result = run_cli("serve", model, "--activation-dtype", "bf16", *port, cache_dir=tmp_path)
    assert_one_line_error(result, "fp32 weights would be rounded")
