import shutil

import pytest
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from ingot.errors import ModelSourceError, UnsupportedModelError
from ingot.models.loader import load_model
from ingot.models.source import resolve_source


@pytest.mark.parametrize("family, architecture", [("llama", "llama"), ("qwen2", "qwen2"), ("qwen3", "qwen3")])
def test_loads_each_family_in_float32(tiny_model, family, architecture):
    loaded = load_model(resolve_source(str(tiny_model(family))))
    assert loaded.family.name == architecture
    assert next(loaded.model.parameters()).dtype.is_floating_point
    assert str(next(loaded.model.parameters()).dtype) == "torch.float32"
    assert loaded.eos_token_ids == [2]


def test_unknown_architecture_names_the_supported_ones(tmp_path):
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel.*LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"):
        load_model(resolve_source(str(tmp_path)))


def test_truncated_weights_are_refused(tiny_model, tmp_path):
    path = tmp_path / "m"
    shutil.copytree(tiny_model("llama"), path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelSourceError, match="cannot read the weights"):
        load_model(resolve_source(str(path)))


def test_missing_tensor_is_refused(tiny_model, tmp_path):
    path = tmp_path / "m"
    shutil.copytree(tiny_model("llama"), path)
    state = load_file(path / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelSourceError, match="missing model.layers.1.mlp.up_proj.weight"):
        load_model(resolve_source(str(path)))
