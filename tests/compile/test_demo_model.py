"""The built-in demo model end to end: the real SmolLM2-135M-Instruct GGUF, compiled, verified and generating.

The slowest tests of the suite (a few minutes on 2 cores): the ones that prove the pipeline on a real model.
"""

import shutil

import pytest
import torch

from ingot.artifacts.store import ArtifactStore
from ingot.compile.llm.kind import compile_model
from ingot.compile.options import CompileOptions
from ingot.compile.verify.references import reference_model
from ingot.runtime.engine import Engine
from ingot.runtime.sampling_params import SamplingParams

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about compilers.",
    "Explain in two sentences why the sky is blue, and then say what color sunsets are and why they look that way.",
]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    directory = tmp_path_factory.mktemp("smollm2")
    store = ArtifactStore(directory)  # its own store: the 2.4 GB artifact goes with the module
    yield compile_model("smollm2-135m", CompileOptions.parse(max_batch=8, max_context=512), store, quiet=True)
    shutil.rmtree(directory)


@pytest.fixture(scope="module")
def reference(smollm2):
    """transformers' float32 model on the artifact's weights, loaded once for the module's tests."""
    return reference_model(smollm2.path, smollm2.manifest)


def test_smollm2_gguf_compiles_and_matches_the_float32_reference(smollm2):
    manifest = smollm2.manifest
    assert manifest.model.architecture == "LlamaForCausalLM" and manifest.model.source_kind == "gguf"
    assert manifest.model.config["num_hidden_layers"] == 30
    # One copy of every weight (134.5M float32 parameters, the tied embedding read from the LM head's panels),
    # and the programs are code only: the artifact is the weights plus at most 200 MB.
    weights = (smollm2.path / "weights.safetensors").stat().st_size
    assert weights < 4 * 134.6e6
    assert sum(f.size for f in manifest.files.values()) < weights + 200e6
    assert manifest.tokenizer.has_chat_template and manifest.tokenizer.eos_token_ids == [2]
    report = manifest.verification
    assert report.passed and report.pcc >= 0.9999 and report.top1_agreement >= 0.99
    assert report.num_tokens >= 256


def test_smollm2_batched_greedy_equals_one_at_a_time_and_transformers(smollm2, reference):
    engine = Engine(smollm2.path, smollm2.manifest, num_blocks=256)
    try:
        prompts = [
            engine.tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
            for q in QUESTIONS
        ]
        # min_tokens bans the end-of-sequence token for all 64 tokens, as transformers' min_new_tokens does
        greedy = SamplingParams(temperature=0, max_tokens=64, min_tokens=64)
        together = engine.generate(prompts, greedy)
        alone = [engine.generate([prompt], greedy)[0] for prompt in prompts]
        prompt_ids = [engine.tokenize(prompt) for prompt in prompts]
    finally:
        engine.shutdown()
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    for ids, completion in zip(prompt_ids, together):
        expected = reference.generate(torch.tensor([ids]), max_new_tokens=64, min_new_tokens=64, do_sample=False)
        assert completion.token_ids == expected[0, len(ids) :].tolist()


def test_smollm2_prompt_logprobs_match_transformers(smollm2, reference):
    """What an evaluation harness scores: each prompt token's logprob, against transformers' float32 model."""
    engine = Engine(smollm2.path, smollm2.manifest, num_blocks=64)
    try:
        ids = engine.tokenize(QUESTIONS[2])
        (scored,) = engine.generate([ids], SamplingParams(max_tokens=0, prompt_logprobs=1))
    finally:
        engine.shutdown()
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0].float().log_softmax(dim=-1)
    assert scored.prompt_logprobs[0] is None and len(scored.prompt_logprobs) == len(ids)
    got = torch.tensor([entry.logprob for entry in scored.prompt_logprobs[1:]])
    want = expected[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    assert torch.allclose(got, want, atol=1e-3)
