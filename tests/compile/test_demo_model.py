"""The built-in demo model end to end: the real SmolLM2-135M-Instruct GGUF, compiled and verified.

The slowest test of the suite (a few minutes on 2 cores): the one that proves the pipeline on a real model.
"""

from ingot.artifacts.store import ArtifactStore
from ingot.compile.options import CompileOptions
from ingot.compile.pipeline import compile_model


def test_smollm2_gguf_compiles_and_matches_the_float32_reference(tmp_path):
    store = ArtifactStore(tmp_path)  # its own store: the 2.4 GB artifact goes when the test passes
    result = compile_model("smollm2-135m", CompileOptions.parse(max_batch=8, max_context=512), store, quiet=True)
    manifest = result.manifest
    assert manifest.model.architecture == "LlamaForCausalLM" and manifest.model.source_kind == "gguf"
    assert manifest.model.config["num_hidden_layers"] == 30
    assert manifest.weights.aliases == {"model.lm_head.weight": "model.model.embed_tokens.weight"}
    assert manifest.tokenizer.has_chat_template and manifest.tokenizer.eos_token_ids == [2]
    report = manifest.verification
    assert report.passed and report.pcc >= 0.9999 and report.top1_agreement >= 0.99
    assert report.num_tokens >= 256
