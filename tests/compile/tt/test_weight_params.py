"""Weights as TT-MLIR parameters, and `--weight-format bfp8|bfp4` stored in the TT binary (issue 25, requirement 3)."""

from __future__ import annotations

import pytest

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.weight_format import WeightFormat
from ingot.compile.options import CompileOptions
from ingot.compile.pipeline import cache_key
from ingot.compile.tt.ops import parameter_formats
from ingot.compile.tt.weight_dtypes import plugin_weight_dtype
from ingot.models.source import resolve_source
from tests.compile.tt.conftest import TT_SMALL_OPTIONS
from tests.conftest import run_cli, tiny_cli_options
from tests.test_cli import assert_one_line_error


def test_weights_are_parameters_and_matmul_weights_are_bfp8_in_the_binary(tt_bfp8):
    manifest = check_artifact(tt_bfp8.path)
    for program in manifest.programs:
        tt = program.tt
        ttir = (tt_bfp8.path / f"programs/{program.name}.ttir.mlir").read_text()
        ttnn = (tt_bfp8.path / f"programs/{program.name}.ttnn.mlir").read_text()
        # every weight the program reads is a parameter (JAX drops the unused ones), const-evaluated once it loads
        assert tt.weight_formats and set(tt.weight_formats) <= set(tt.weight_inputs)
        assert ttir.count("ttcore.argument_type<parameter>") == len(tt.weight_formats)
        for weight in tt.weight_formats:
            assert f'ttir.name = "{weight}"' in ttir
        # the step's inputs stay inputs; the paged cache ops address the cache by position and block table, so
        # slot_mapping is unused on TT and JAX drops it
        used_inputs = [i for i in tt.inputs if i.name != "slot_mapping"]
        assert ttir.count("ttcore.argument_type<input>") == len(used_inputs)
        assert 'tt.function_type = "const_eval"' in ttnn
        assert "tile<32x32, bfp_bf8>" in ttnn and "tile<32x32, bfp_bf4>" not in ttnn
        # the manifest says per weight what the binary reads: every matmul weight bfp8 (the tied LM head's too),
        # the rest float32
        held = {name for name, fmt in tt.weight_formats.items() if fmt == WeightFormat.BFP8}
        matmul_weights = {name for name in tt.weight_formats if name.endswith(("_proj.weight", "lm_head.weight"))}
        assert held == matmul_weights and "model.lm_head.weight" in held
        assert all(fmt == WeightFormat.FP32 for name, fmt in tt.weight_formats.items() if name not in held)
        # the conversion check (JAX on the CPU against torch) still passes: the marks change nothing it computes
        assert tt.conversion is not None and tt.conversion.passed
    assert manifest.options["weight_format"] == "bfp8"


def test_inspect_and_verify_report_the_formats_in_the_binary(tt_bfp8, session_store):
    result = run_cli("inspect", tt_bfp8.key, cache_dir=session_store.root)
    assert result.returncode == 0, result.stderr
    assert "weights in the binary" in result.stdout and "bfp8" in result.stdout
    result = run_cli("verify", tt_bfp8.key, cache_dir=session_store.root)
    assert result.returncode == 0, result.stderr
    # predicted in exactly the binary's formats: bfp8 matmul weights, everything else float32
    assert "predicted TT accuracy, binary policy" in result.stdout
    assert "accuracy policy" not in result.stdout and "performance policy" not in result.stdout


def test_the_prediction_applies_exactly_the_binary_formats(tt_bfp8):
    from ingot.compile.verify.predicted_llm import BINARY_POLICY, predict_tt_accuracies

    manifest = check_artifact(tt_bfp8.path)
    [report] = predict_tt_accuracies(tt_bfp8.path, manifest, [BINARY_POLICY])
    # seven linears a layer and the LM head (tied: the embedding it shares a tensor with gathers float32 rows)
    linears = 7 * manifest.model.config["num_hidden_layers"] + 1
    assert report.policy == "binary" and report.applied == {"weight bfloat8_b": linears}
    assert 0.99 < report.pcc < 1.0


def test_the_cache_key_includes_the_tt_weight_format(tiny_model):
    digests = resolve_source(str(tiny_model("llama"))).digests()
    options = [CompileOptions.parse(**TT_SMALL_OPTIONS, weight_format=f) for f in ("fp32", "bfp8", "bfp4")]
    keys = {cache_key(digests, o) for o in options}
    assert len(keys) == 3


def test_bfp8_and_bfp4_are_the_plugins_weight_dtypes():
    assert [plugin_weight_dtype(choice, "p150") for choice in ("fp32", "bfp8", "bfp4")] == [None, "bfp_bf8", "bfp_bf4"]


@pytest.mark.parametrize(
    "choice, message",
    [
        ("performance", "--weight-format performance on p150 needs per-tensor formats"),
        ("accuracy", "tt.weight_dtype_override is not legalized"),
        ("bf16", "--weight-format bf16 on p150: this TT plugin converts matmul weights to bfp8 or bfp4 only"),
    ],
)
def test_formats_the_plugin_cannot_compile_are_refused_in_one_line(tiny_model, tmp_path, choice, message):
    model = str(tiny_model("llama"))
    for command in ("compile", "cache-key"):
        result = run_cli(command, model, "--target", "p150", "--weight-format", choice, *tiny_cli_options(),
                         cache_dir=tmp_path)  # fmt: skip
        assert_one_line_error(result, message)


def test_parameter_formats_reads_the_const_eval_loads_of_named_parameters():
    const_eval = (
        "  func.func private @main_const_eval_0(%arg0: tensor<64x64xf32, #l0>) -> "
        'tensor<64x64x!ttcore.tile<32x32, bfp_bf4>, #l1> attributes {tt.function_type = "const_eval"} {'
    )
    main = (
        "  func.func public @main(%arg0: tensor<64x64xf32, #l0> {ttcore.argument_type = "
        '#ttcore.argument_type<parameter>, ttir.name = "up.weight"} loc("states[0]"), %arg1: tensor<64xf32, #l2> '
        '{ttcore.argument_type = #ttcore.argument_type<parameter>, ttir.name = "norm.weight"} loc("states[1]")) {'
    )
    converted = (
        "    %0 = ttcore.load_cached(@main_const_eval_0, [%arg0]) : (tensor<64x64xf32, #l0>) -> "
        "tensor<64x64x!ttcore.tile<32x32, bfp_bf4>, #l1> loc(#loc)"
    )
    as_stored = (
        "    %1 = ttcore.load_cached(@main_const_eval_1, [%arg1]) : (tensor<64xf32, #l2>) -> tensor<1x64xf32, #l3>"
    )
    lines = [const_eval, main, converted, as_stored]
    assert parameter_formats("\n".join(lines)) == {"up.weight": "bfp_bf4", "norm.weight": None}
