"""`--weight-format` on the cpu target: the option, what each choice stores (the same bits as the TT prediction),
the artifact's size, its verification against float32 and its generation against the decoded weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.manifest import Manifest
from ingot.artifacts.weight_format import WEIGHT_FORMAT_CHOICES, WeightFormat
from ingot.compile.cpu.packed_linears import PACK_WIDTH, pack_linear_weight, unpack_linear_weight
from ingot.compile.llm.kind import compile_model
from ingot.compile.options import CompileOptions
from ingot.compile.pipeline import cache_key
from ingot.compile.tt.emulate import predicted_model
from ingot.compile.tt.formats import quantize
from ingot.compile.verify import tt_acceptance
from ingot.compile.verify.references import DECODED_REFERENCE, LLM_REFERENCE
from ingot.compile.verify.stored import verify_stored
from ingot.compile.weight_formats import format_policy, tensor_formats, tt_format
from ingot.errors import OptionError, VerificationError
from ingot.models.source import resolve_source
from ingot.runtime.engine import Engine
from ingot.runtime.sampling_params import SamplingParams
from tests.conftest import TINY_OPTIONS
from tests.tiny_models import COMMON, FAMILIES

FP32, BF16, BFP8, BFP4 = WeightFormat.FP32, WeightFormat.BF16, WeightFormat.BFP8, WeightFormat.BFP4
STEP = "model."  # the artifact names the transformers model's tensors under ingot's step module


# --- the option ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(weight_format="bfp3"), "--weight-format: unknown weight format 'bfp3'; choices: fp32, bf16, bfp8"),
        (dict(weight_format="performance", target="p150"), "--weight-format performance on p150 needs per-tensor"),
        (dict(weight_format="bfp8", target="p150", allow_low_accuracy=True), "--allow-low-accuracy applies to the cpu"),
        (dict(allow_low_accuracy=True), "--allow-low-accuracy applies to a --weight-format other than fp32"),
    ],
)
def test_bad_weight_format_options_are_one_line_errors(values, message):
    with pytest.raises(OptionError, match=message) as error:
        CompileOptions.parse(**values)
    assert "\n" not in str(error.value)


def test_the_cache_key_differs_per_weight_format(tiny_model):
    digests = resolve_source(str(tiny_model("llama"))).digests()
    keys = {cache_key(digests, CompileOptions.parse(weight_format=choice)) for choice in WEIGHT_FORMAT_CHOICES}
    assert len(keys) == len(WEIGHT_FORMAT_CHOICES) == 6
    assert cache_key(digests, CompileOptions.parse()) == cache_key(digests, CompileOptions.parse(weight_format="fp32"))


# --- what a choice stores ----------------------------------------------------------------------------------------


def _untied_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**COMMON, **FAMILIES["llama3"][1])).eval()


def test_a_policy_stores_attention_mlp_head_and_norms_in_its_formats():
    names = [STEP + name for name in _untied_llama().state_dict()]
    accuracy = tensor_formats("accuracy", names)
    layer = STEP + "model.layers.1."
    for projection in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert accuracy[f"{layer}self_attn.{projection}.weight"] is BF16
    for projection in ("gate_proj", "up_proj", "down_proj"):
        assert accuracy[f"{layer}mlp.{projection}.weight"] is BFP8
    assert accuracy[STEP + "lm_head.weight"] is BFP8
    assert accuracy[STEP + "model.embed_tokens.weight"] is BF16  # an untied embedding: its own bfloat16 table
    assert accuracy[STEP + "model.norm.weight"] is BF16 and accuracy[f"{layer}input_layernorm.weight"] is BF16
    performance = tensor_formats("performance", names)
    assert performance[f"{layer}self_attn.q_proj.weight"] is BFP8 and performance[f"{layer}mlp.up_proj.weight"] is BFP4
    assert performance[f"{layer}mlp.down_proj.weight"] is BFP8
    assert set(tensor_formats("bfp4", names).values()) == {BFP4, BF16}  # the linears; norms, embedding bfloat16
    assert tensor_formats("fp32", names) == {}


@pytest.mark.parametrize("choice", ["accuracy", "performance", "bf16", "bfp8", "bfp4"])
def test_a_choice_stores_the_same_bits_the_tt_prediction_emulates(choice):
    """One policy means the same weights on both targets: each stored tensor, decoded, equals the emulation's."""
    model = _untied_llama()
    formats = tensor_formats(choice, [STEP + name for name in model.state_dict()])
    predicted, _ = predicted_model(model, format_policy(choice))
    compared = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            fmt = formats[f"{STEP}{name}.weight"]
            stored = unpack_linear_weight(pack_linear_weight(module.weight, fmt), module.out_features, fmt)
            assert torch.equal(stored, predicted.get_submodule(name).weight), name
            compared += 1
    for name, parameter in model.named_parameters():
        fmt = formats.get(STEP + name)
        if fmt is not None and "_proj" not in name and name != "lm_head.weight":  # norms and the embedding
            assert torch.equal(quantize(parameter, tt_format(fmt)), predicted.get_parameter(name)), name
            compared += 1
    assert compared == 2 * 7 + 1 + 2 * 2 + 2  # the linears, the LM head, the norms, the final norm, the embedding


# --- compiled artifacts ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bfp8(compiled):
    return compiled("llama", weight_format="bfp8")


def test_every_linear_is_stored_in_bfp8_and_the_weights_file_shrinks_with_the_format(bfp8, compiled):
    manifest = bfp8.manifest
    assert manifest.options["weight_format"] == "bfp8"
    assert {group.format for group in manifest.weights.packed.values()} == {BFP8}
    assert sum(len(group.weights) for group in manifest.weights.packed.values()) == 2 * 7 + 1
    # the norms hold bfloat16 values (stored as float32); a tied embedding reads the LM head's bfp8 panels
    assert set(manifest.weights.rounded.values()) == {BF16} and len(manifest.weights.rounded) == 2 * 2 + 1
    assert not any("embed_tokens" in name for name in load_file(bfp8.path / manifest.weights.file))
    stored = load_file(bfp8.path / manifest.weights.file)
    for name in manifest.weights.packed:
        panels, in_features, _ = stored[name].shape
        assert stored[name].nbytes == panels * PACK_WIDTH * in_features * BFP8.bytes_per_value
    fp32 = compiled("llama").manifest
    size = manifest.files[manifest.weights.file].size
    fp32_size = fp32.files[fp32.weights.file].size
    assert 0.25 < size / fp32_size < 0.3  # 17/64 for the linears, the norms (0.7% of the values) still 4 bytes


def test_bfp8_verifies_against_float32_beside_tenstorrents_numbers(bfp8, compiled):
    report = bfp8.manifest.verification
    assert report.reference == LLM_REFERENCE and report.weight_format == "bfp8"
    assert report.passed and report.min_pcc == 0.99 and report.min_top1 == 0.0 and report.pcc >= 0.99
    # against the original weights, which the format changed: far from fp32's last-bit differences
    assert report.max_abs_error > 100 * compiled("llama").manifest.verification.max_abs_error
    assert report.tenstorrent.min_pcc == 0.99 and report.tenstorrent.reported_model == "Llama-3.1-8B"
    assert report.tenstorrent.reported_top1 is None  # one format for all: no tt-metal mode to compare with


def test_bfp8_greedy_generation_equals_transformers_on_the_decoded_weights(bfp8, tiny_model):
    """The weights are the only difference from float32: float32 eager transformers with each linear's weight
    replaced by its decoded bfp8 values (and the norms by their stored values) generates the same tokens."""
    manifest = check_artifact(bfp8.path)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model("llama"), dtype=torch.float32).eval()
    stored = load_file(bfp8.path / manifest.weights.file)
    changed = 0
    with torch.no_grad():
        for name, group in manifest.weights.packed.items():
            decoded = unpack_linear_weight(stored[name], sum(group.out_features), group.format)
            for weight, values in zip(group.weights, decoded.split(group.out_features)):
                parameter = reference.get_parameter(weight.removeprefix(STEP))
                changed += not torch.equal(parameter, values)
                parameter.copy_(values)  # the LM head's is also the tied embedding's, as the artifact's panels are
        for name in manifest.weights.rounded:
            reference.get_parameter(name.removeprefix(STEP)).copy_(stored[name])
    assert changed == 2 * 7 + 1

    assert_greedy_generation_equals(reference, bfp8.path, manifest, new_tokens=48)


def assert_greedy_generation_equals(reference: torch.nn.Module, path, manifest, new_tokens: int) -> None:
    """The artifact at ``path`` generates, greedily, the very tokens ``reference`` (transformers) does, for two
    prompts of different kinds, ``new_tokens`` each."""
    engine = Engine(path, manifest, num_blocks=64)
    try:
        prompts = ["The quick brown fox", "def main():\n    return sum(i * i for i in range(10))\n"]
        params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
        for prompt, completion in zip(prompts, engine.generate(prompts, params)):
            ids = torch.tensor([engine.tokenize(prompt)])
            expected = reference.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            assert completion.token_ids == expected[0, ids.shape[1] :].tolist()
    finally:
        engine.shutdown()


def test_ingot_verify_checks_a_bfp8_artifact_against_its_decoded_weights(bfp8):
    report = verify_stored(bfp8.path)
    assert report.reference == DECODED_REFERENCE and report.weight_format == "bfp8"
    assert report.passed and report.min_pcc == 0.9999 and report.pcc >= 0.9999  # the strict float32 bar


def test_a_format_below_tenstorrents_bar_fails_the_compile_unless_allowed(tiny_model, session_store, monkeypatch):
    """Forced by a bar no weight format reaches (the tiny model clears the real one)."""
    monkeypatch.setattr(tt_acceptance, "TT_MIN_PCC", 1.0)
    model = str(tiny_model("llama"))
    options = CompileOptions.parse(**TINY_OPTIONS, weight_format="accuracy")
    with pytest.raises(VerificationError, match="below Tenstorrent's 1.0; --allow-low-accuracy") as error:
        compile_model(model, options, session_store, quiet=True)
    assert "\n" not in str(error.value) and "--weight-format accuracy" in str(error.value)
    assert not session_store.has(cache_key(resolve_source(model).digests(), options))

    allowed = CompileOptions.parse(**TINY_OPTIONS, weight_format="accuracy", allow_low_accuracy=True)
    result = compile_model(model, allowed, session_store, quiet=True)
    report = Manifest.read(result.path).verification
    assert not report.passed and report.allowed_below_bar and report.accepted
    assert report.tenstorrent.reported_top1 == 0.96 and report.tenstorrent.reported_top5 == 1.0  # accuracy mode
    formats = {name: group.format for name, group in result.manifest.weights.packed.items()}
    assert formats == {
        **{f"packed_model_model_layers_{i}_self_attn_q_proj_weight": BF16 for i in range(2)},  # q, k, v together
        **{f"packed_model_model_layers_{i}_self_attn_o_proj_weight": BF16 for i in range(2)},
        **{f"packed_model_model_layers_{i}_mlp_gate_proj_weight": BFP8 for i in range(2)},  # gate, up together
        **{f"packed_model_model_layers_{i}_mlp_down_proj_weight": BFP8 for i in range(2)},
        "packed_model_lm_head_weight": BFP8,
    }
