"""Random models of real shapes, and their F32 GGUFs for llama.cpp: the benchmark's inputs."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM

from ingot.benchmark.gguf_f32 import _llama3_rope_factors, dequantized_gguf, hf_to_gguf
from ingot.benchmark.shapes import SHAPES, model_config, write_random_model
from ingot.models.loader import load_model
from ingot.models.source import builtin_model_path, resolve_source
from tests.tiny_models import make_tokenizer

DEMO_VOCAB = 49152  # the demo GGUF's tokenizer, which converted models carry
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_each_shape_has_its_published_parameter_count(name):
    shape = SHAPES[name]
    tokens = make_tokenizer()
    with torch.device("meta"):  # shapes only: no memory
        model = getattr(transformers, shape.architecture)(model_config(shape, tokens))
    assert sum(p.numel() for p in model.parameters()) == shape.parameters
    assert model.config.tie_word_embeddings


def test_llama_shape_has_llama3_rope_scaling():
    config = SHAPES["llama-3.2-1b"].config
    assert config["rope_parameters"] == {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
    }  # fmt: skip


def test_a_random_model_with_a_vocabulary_beyond_its_tokenizer_loads_in_ingot(tmp_path):
    tokens = make_tokenizer()
    config = model_config(SHAPES["qwen3-0.6b"], tokens, **SMALL, vocab_size=len(tokens) + 1000)
    write_random_model(config, tokens, tmp_path / "model")
    loaded = load_model(resolve_source(str(tmp_path / "model")))
    assert loaded.family.name == "qwen3" and loaded.config.vocab_size == len(tokens) + 1000
    assert loaded.eos_token_ids == [tokens.eos_token_id]
    assert loaded.model.model.layers[0].self_attn.q_norm.weight.shape == (128,)


def test_a_vocabulary_smaller_than_the_tokenizer_is_refused(tmp_path):
    tokens = make_tokenizer()
    config = model_config(SHAPES["llama-3.2-1b"], tokens, **SMALL, vocab_size=len(tokens) - 1)
    with pytest.raises(ValueError, match="must cover the tokenizer"):
        write_random_model(config, tokens, tmp_path / "model")


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_converted_gguf_computes_what_the_hf_model_computes(name, tmp_path):
    """transformers' GGUF loader undoes llama.cpp's conventions (Llama's interleaved rope rows among them): the
    GGUF read back gives the HF model's logits, bit for bit."""
    tokens = make_tokenizer()
    overrides = dict(SMALL, vocab_size=DEMO_VOCAB + 100, initializer_range=0.1)
    if name == "llama-3.2-1b":  # transformers reads no llama3 rope scaling from a GGUF: checked apart, below
        overrides["rope_parameters"] = {"rope_type": "default", "rope_theta": 500000.0}
    model_dir = write_random_model(model_config(SHAPES[name], tokens, **overrides), tokens, tmp_path / name)
    out = hf_to_gguf(model_dir, tmp_path / f"{name}.gguf")

    fields = gguf.GGUFReader(out).fields
    assert len(fields["tokenizer.ggml.tokens"].contents()) == DEMO_VOCAB + 100  # padded to the model's vocabulary
    assert fields["general.file_type"].contents() == gguf.LlamaFileType.ALL_F32
    ids = torch.tensor([[5, 17, 300, 42, 9, 1000, DEMO_VOCAB + 50]])
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()(ids).logits
        read_back = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name, dtype=torch.float32).eval()
        assert torch.equal(read_back(ids).logits, expected)


def test_llama3_rope_factors_are_transformers_frequency_scaling(tmp_path):
    shape = SHAPES["llama-3.2-1b"]
    config = model_config(shape, make_tokenizer())
    scaled, _ = transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    unscaled = 1.0 / 500000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64)
    factors = _llama3_rope_factors(shape.config["rope_parameters"], 64)
    assert factors.shape == (32,) and factors[0] == 1.0 and factors[-1] == 32.0
    np.testing.assert_allclose(unscaled / scaled, factors, rtol=1e-5)


def test_the_demo_gguf_dequantized_holds_the_same_values_in_f32(tmp_path):
    source = builtin_model_path("smollm2-135m")
    out = dequantized_gguf(source, tmp_path / "f32.gguf")
    original, converted = gguf.GGUFReader(source), gguf.GGUFReader(out)
    assert converted.fields["general.file_type"].contents() == gguf.LlamaFileType.ALL_F32
    assert converted.fields["tokenizer.ggml.tokens"].contents() == original.fields["tokenizer.ggml.tokens"].contents()
    assert [t.name for t in converted.tensors] == [t.name for t in original.tensors]
    for before, after in zip(original.tensors[:12], converted.tensors[:12]):
        assert after.tensor_type == gguf.GGMLQuantizationType.F32
        assert np.array_equal(gguf.quants.dequantize(before.data, before.tensor_type), after.data)
