"""`--kv-cache-dtype bf16`: a tiny model compiled with a bfloat16 KV cache verifies within the bfloat16 bar, generates
what float32 transformers generates when its keys and values are rounded to bfloat16, and holds twice the tokens in
the same memory."""

from __future__ import annotations

import pytest
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from ingot.artifacts.integrity import check_artifact
from ingot.compile.llm.kind import compile_model
from ingot.compile.options import CompileOptions
from ingot.compile.pipeline import cache_key
from ingot.compile.verify.references import reference_model
from ingot.compile.verify.stored import verify_stored
from ingot.models.source import resolve_source
from ingot.runtime.engine import Engine
from ingot.runtime.kv_sizing import kv_block_bytes, kv_cache_blocks
from ingot.runtime.sampling_params import SamplingParams
from tests.conftest import TINY_OPTIONS, run_cli

BF16_OPTIONS = CompileOptions.parse(**TINY_OPTIONS, kv_cache_dtype="bf16")
GREEDY_48 = SamplingParams(temperature=0, max_tokens=48, ignore_eos=True)
PROMPTS = ["The quick brown fox", "Compilers turn programs into fast code, and servers", "Hé"]
BF16_KV_ATTENTION = "test_sdpa_bf16_kv"


@pytest.fixture(scope="module")
def bf16_artifact(tiny_model, session_store):
    return compile_model(str(tiny_model("llama")), BF16_OPTIONS, session_store, quiet=True)


def test_the_artifact_records_a_bfloat16_cache_and_verifies_within_the_bfloat16_bar(bf16_artifact):
    manifest = bf16_artifact.manifest
    assert manifest.kv_cache.dtype == "bfloat16"
    for program in manifest.programs:
        if program.kind != "logits":
            assert next(t for t in program.inputs if t.name == "kv_cache").dtype == "bfloat16"
            assert next(t for t in program.outputs if t.name == "logits").dtype == "float32"
    report = manifest.verification
    assert report.passed
    assert (report.min_pcc, report.min_top1) == (0.99, 0.0)  # Tenstorrent's bar: logits PCC alone
    assert report.top1_agreement >= 0.95
    assert all(value >= 0.99 for value in report.programs.values())
    # nearer the float32 reference than the bar needs: the rounding is the only difference
    assert report.pcc < 1.0 and report.pcc >= 0.999


def test_ingot_verify_holds_a_stored_artifact_to_the_same_bar(bf16_artifact):
    report = verify_stored(bf16_artifact.path)
    assert report.passed and report.min_pcc == 0.99
    assert report.pcc == pytest.approx(bf16_artifact.manifest.verification.pcc, abs=1e-6)


def test_greedy_generation_equals_float32_transformers_with_bfloat16_keys_and_values(bf16_artifact):
    """Keys and values are rounded as ``.to(torch.bfloat16)`` rounds them when written; attention reads them back
    into float32. The eager reference rounds them the same way at its attention's input, everything else float32."""
    path = bf16_artifact.path
    engine = Engine(path, check_artifact(path), num_blocks=64)
    try:
        assert engine.runner.kv_cache.dtype == torch.bfloat16
        completions = engine.generate(PROMPTS, GREEDY_48)
        prompt_ids = [engine.tokenize(prompt) for prompt in PROMPTS]
    finally:
        engine.shutdown()
    reference = reference_model(path, check_artifact(path))
    AttentionInterface.register(BF16_KV_ATTENTION, _sdpa_over_bfloat16_keys_and_values)
    reference.config._attn_implementation = BF16_KV_ATTENTION
    for ids, completion in zip(prompt_ids, completions):
        ids = torch.tensor([ids])
        expected = reference.generate(ids, max_new_tokens=48, min_new_tokens=48, do_sample=False)
        assert completion.token_ids == expected[0, ids.shape[1] :].tolist()


def _sdpa_over_bfloat16_keys_and_values(module, query, key, value, attention_mask, **kwargs):
    def rounded(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(torch.bfloat16).to(tensor.dtype)

    return sdpa_attention_forward(module, query, rounded(key), rounded(value), attention_mask, **kwargs)


def test_a_bfloat16_block_is_half_the_bytes_so_a_budget_holds_twice_the_tokens(bf16_artifact):
    layout = bf16_artifact.manifest.kv_cache
    float32 = layout.model_copy(update={"dtype": "float32"})
    assert kv_block_bytes(float32) == 2 * kv_block_bytes(layout)
    # 2 layers x K and V x 16 tokens x 2 heads x 16 dims x 2 bytes
    assert kv_block_bytes(layout) == 2 * 2 * 16 * 2 * 16 * 2
    assert kv_cache_blocks(layout, 256, kv_cache_gb=0.5) == 2 * kv_cache_blocks(float32, 256, kv_cache_gb=0.5)


def test_ingot_inspect_shows_the_cache_dtype(bf16_artifact, session_store):
    inspect = run_cli("inspect", bf16_artifact.key, cache_dir=session_store.root)
    assert inspect.returncode == 0, inspect.stderr
    assert "KV cache bfloat16 in blocks of 16" in " ".join(inspect.stdout.split())


def test_the_cache_dtype_is_in_the_key(tiny_model):
    digests = resolve_source(str(tiny_model("llama"))).digests()
    float32 = CompileOptions.parse(**TINY_OPTIONS)
    assert float32.kv_cache_dtype == "fp32" and float32.kv_cache_torch_dtype == "float32"
    assert cache_key(digests, BF16_OPTIONS) != cache_key(digests, float32)
    explicit = CompileOptions.parse(**TINY_OPTIONS, kv_cache_dtype="fp32")
    assert cache_key(digests, explicit) == cache_key(digests, float32)
