"""Format policies applied to a transformers model, and the predicted TT accuracy `ingot verify` reports."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ingot.artifacts.manifest import Manifest
from ingot.compile.tt import emulate, policies
from ingot.compile.tt.formats import TTFormat, quantize
from ingot.compile.verify import predicted_llm
from ingot.errors import OptionError
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def llama(tiny_model):
    path = tiny_model("llama")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def test_policies_are_tt_metal_modes():
    acc, perf = policies.get_policy("accuracy"), policies.get_policy("performance")
    assert "ModelOptimizations" in acc.source and "ModelOptimizations" in perf.source
    assert acc.rule_for("model.layers.0.self_attn.q_proj").weight is TTFormat.BFLOAT16
    assert perf.rule_for("model.layers.0.self_attn.v_proj").weight is TTFormat.BFLOAT8_B
    assert acc.rule_for("model.layers.7.mlp.gate_proj").weight is TTFormat.BFLOAT8_B
    assert perf.rule_for("model.layers.7.mlp.up_proj").weight is TTFormat.BFLOAT4_B
    assert perf.rule_for("model.layers.7.mlp.down_proj").weight is TTFormat.BFLOAT8_B
    assert (acc.kv_cache, perf.kv_cache) == (TTFormat.BFLOAT16, TTFormat.BFLOAT8_B)
    assert acc.rule_for("model.layers.0.self_attn") is None  # patterns match whole names
    assert perf.rule_for("model.layers.12").output is TTFormat.BFLOAT16  # the residual stream, up to 999 layers
    assert perf.rule_for("model.layers.12.mlp.act_fn") is None
    with pytest.raises(OptionError, match="accuracy"):
        policies.get_policy("fast")


def test_cli_offers_every_policy():
    from ingot.cli import build_parser

    verify = build_parser()._subparsers._group_actions[0].choices["verify"]
    option = next(a for a in verify._actions if "--tt-policy" in a.option_strings)
    assert sorted(option.choices) == sorted(policies.POLICIES)


def test_policy_reaches_the_layers_it_names(llama):
    reference, _ = llama
    model, applied = emulate.predicted_model(reference, policies.PERFORMANCE)
    layers = reference.config.num_hidden_layers
    for i in range(layers):
        prefix = f"model.layers.{i}"
        attention = {"weight": "bfloat8_b", "input": "bfloat16", "output": "bfloat16"}
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            assert applied[f"{prefix}.self_attn.{name}"] == attention
        for name in ("gate_proj", "up_proj"):
            assert applied[f"{prefix}.mlp.{name}"]["weight"] == "bfloat4_b"
        assert applied[f"{prefix}.mlp.down_proj"] == {"weight": "bfloat8_b", "input": "bfloat8_b", "output": "bfloat16"}
        assert applied[f"{prefix}.input_layernorm"] == {"weight": "bfloat16", "input": "bfloat16"}
        assert applied[prefix] == {"output": "bfloat16"}  # the residual stream
        assert f"{prefix}.mlp.act_fn" not in applied
    assert applied["lm_head"] == {"weight": "bfloat8_b", "input": "bfloat16", "output": "bfloat8_b"}
    assert applied["model.embed_tokens"] == {"weight": "bfloat16", "output": "bfloat16"}

    # the stored weights are the emulated formats, a linear's blocks running along its output features
    up = reference.model.layers[1].mlp.up_proj.weight
    assert torch.equal(model.model.layers[1].mlp.up_proj.weight, quantize(up.t(), "bfloat4_b").t())
    assert not torch.equal(model.model.layers[1].mlp.up_proj.weight, quantize(up, "bfloat4_b"))
    # tied embeddings are untied: the table stays bfloat16 while the LM head is bfloat8_b
    assert torch.equal(model.model.embed_tokens.weight, quantize(reference.model.embed_tokens.weight, "bfloat16"))
    assert torch.equal(model.lm_head.weight, quantize(reference.lm_head.weight.t(), "bfloat8_b").t())
    # the reference is untouched, attention implementation included
    assert reference.lm_head.weight is reference.model.embed_tokens.weight
    assert reference.config._attn_implementation == "sdpa"
    assert model.config._attn_implementation == "ingot_tt_kv_bfloat8_b"

    with torch.no_grad():
        logits = model(torch.tensor([[5, 6, 7, 8]])).logits
    assert torch.equal(quantize(logits, "bfloat8_b"), logits)  # the LM head writes bfloat8_b


def test_kv_cache_format_changes_attention(llama):
    reference, _ = llama
    ids = torch.tensor([list(range(3, 40))])
    only_kv = {
        fmt: policies.FormatPolicy(name=f"kv-{fmt.value}", description="", rules=(), kv_cache=fmt)
        for fmt in (TTFormat.BFLOAT16, TTFormat.BFLOAT4_B)
    }
    with torch.no_grad():
        expected = reference(ids).logits
        bf16 = emulate.predicted_model(reference, only_kv[TTFormat.BFLOAT16])[0](ids).logits
        bfp4 = emulate.predicted_model(reference, only_kv[TTFormat.BFLOAT4_B])[0](ids).logits
    assert (bf16 - expected).abs().max() < (bfp4 - expected).abs().max()


def test_predicted_accuracy_orders_the_formats(llama):
    reference, tokenizer = llama
    formats = (TTFormat.BFLOAT16, TTFormat.BFLOAT8_B, TTFormat.BFLOAT4_B)
    reports = dict(zip(formats, predicted_llm.predict_accuracies(reference, tokenizer, [policies.uniform(f) for f in formats])))
    pccs = [reports[f].pcc for f in (TTFormat.BFLOAT16, TTFormat.BFLOAT8_B, TTFormat.BFLOAT4_B)]
    assert 1.0 > pccs[0] > pccs[1] > pccs[2] > 0.5
    accuracy, performance = predicted_llm.predict_accuracies(reference, tokenizer, [policies.ACCURACY, policies.PERFORMANCE])
    assert accuracy.pcc > performance.pcc
    assert accuracy.num_tokens == 320 and accuracy.reference == "transformers eager float32"
    assert accuracy.tenstorrent.min_pcc == 0.99
    assert (accuracy.tenstorrent.reported_top1, accuracy.tenstorrent.reported_top5) == (0.96, 1.0)
    assert (performance.tenstorrent.reported_top1, performance.tenstorrent.reported_top5) == (0.90, 0.97)
    assert accuracy.meets_tt_pcc == (accuracy.pcc >= 0.99)
    assert 0 <= performance.top1_agreement <= performance.top5_agreement <= 1


def test_predict_from_a_cpu_artifact(compiled):
    result = compiled("llama")
    [report] = predicted_llm.predict_tt_accuracies(result.path, result.manifest, ["accuracy"])
    assert report.policy == "accuracy" and 0.9 < report.pcc < 1.0
    assert report.applied["kv cache bfloat16"] == result.manifest.model.config["num_hidden_layers"]


def test_cli_verify_with_tt_policy(compiled, tmp_path):
    result = compiled("llama")
    done = run_cli("verify", str(result.path), "--tt-policy", "performance")
    assert done.returncode == 0, done.stderr
    assert "verification against transformers eager float32" in done.stdout
    assert "predicted TT accuracy, performance policy" in done.stdout
    assert "90% (Llama-3.1-8B reported by tt-metal)" in done.stdout

    # A TT artifact's programs cannot run here: verify checks its files and predicts both policies. Until the
    # p150 target lands, a copy of the cpu artifact relabelled p150 stands in for one.
    tt = tmp_path / result.path.name
    shutil.copytree(result.path, tt)
    manifest = Manifest.read(tt)
    manifest.model_copy(update={"target": "p150"}).write(tt)
    done = run_cli("verify", str(tt))
    assert done.returncode == 0, done.stderr
    assert "p150 artifact: its programs need a Tenstorrent device" in done.stdout
    assert "verification against" not in done.stdout
    assert "accuracy policy" in done.stdout and "performance policy" in done.stdout

    (tt / manifest.weights.file).write_bytes(b"changed")
    done = run_cli("verify", str(tt))
    assert done.returncode == 1 and "sha256" in done.stderr
