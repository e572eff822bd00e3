"""Model specs per Tenstorrent device: FLOPs, bytes and roofline times read from TTNN MLIR, checked against numbers
worked out by hand, and on the tiny Llama lowered for p150."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ingot.compile.tt.published_targets import published_targets
from ingot.compile.tt.roofline import PEAKS, MemoryFit, device_report, program_roofline
from ingot.compile.tt.ttnn_cost import main_arguments, mesh_chips, op_costs
from ingot.errors import OptionError
from tests.conftest import run_cli

# A 2048x2048 bfloat16 activation times a 2048x2048 bfloat8_b weight at HiFi2, then an element-wise add of the
# product to itself; a reshape (a view) and a deallocate; and a const-eval function (run once, at load) whose matmul
# must not count.
TINY_TTNN = """\
#dram = #ttnn.buffer_type<dram>
#system_memory = #ttnn.buffer_type<system_memory>
#ttnn_layout = #ttnn.ttnn_layout<(d0, d1) -> (d0, d1), <1x1>, memref<64x64x!ttcore.tile<32x32, bf16>, #dram>, <interleaved>>
#ttnn_layout1 = #ttnn.ttnn_layout<(d0, d1) -> (d0, d1), <1x1>, memref<64x64x!ttcore.tile<32x32, bfp_bf8>, #dram>, <interleaved>>
#ttnn_layout2 = #ttnn.ttnn_layout<(d0, d1) -> (d0, d1), <1x1>, memref<128x32x!ttcore.tile<32x32, bf16>, #dram>, <interleaved>>
#ttnn_layout3 = #ttnn.ttnn_layout<(d0) -> (0, d0), <1x1>, memref<1x8xf32, #system_memory>>
module @jit_step {
  ttcore.device_module {
    builtin.module @jit_step {
      func.func private @main_const_eval_0(%arg0: tensor<2048x2048xbf16, #ttnn_layout>) -> tensor<2048x2048xbf16, #ttnn_layout> attributes {tt.function_type = "const_eval"} {
        %0 = "ttnn.get_device"() <{mesh_offset = #ttnn<mesh_offset 0x0>, mesh_shape = #ttnn<mesh_shape 1x1>}> : () -> !ttnn.device loc(#loc)
        %1 = "ttnn.matmul"(%arg0, %arg0) <{transpose_a = false, transpose_b = false}> : (tensor<2048x2048xbf16, #ttnn_layout>, tensor<2048x2048xbf16, #ttnn_layout>) -> tensor<2048x2048xbf16, #ttnn_layout> loc(#loc)
        return %1 : tensor<2048x2048xbf16, #ttnn_layout> loc(#loc)
      }
      func.func public @main(%arg0: tensor<2048x2048x!ttcore.tile<32x32, bfp_bf8>, #ttnn_layout1> {ttcore.argument_type = #ttcore.argument_type<parameter>, ttcore.local_shape = #ttcore<local_shape local_shape = tensor<2048x2048xbf16>>} loc("states[0]"), %arg1: tensor<2048x2048xbf16, #ttnn_layout> {ttcore.argument_type = #ttcore.argument_type<input>} loc("inputs[0]"), %arg2: tensor<8xf32, #ttnn_layout3> {ttcore.argument_type = #ttcore.argument_type<input>} loc("inputs[1]")) -> (tensor<4096x1024xbf16, #ttnn_layout2> {ttcore.shard_status = #ttcore.shard_status<unsharded>}) {
        %0 = "ttnn.get_device"() <{mesh_offset = #ttnn<mesh_offset 0x0>, mesh_shape = #ttnn<mesh_shape 1x1>}> : () -> !ttnn.device loc(#loc)
        %1 = "ttnn.matmul"(%arg1, %arg0) <{compute_config = #ttnn.device_compute_kernel_config<math_fidelity = hifi2, fp32_dest_acc_en = true>, transpose_a = false, transpose_b = false}> : (tensor<2048x2048xbf16, #ttnn_layout>, tensor<2048x2048x!ttcore.tile<32x32, bfp_bf8>, #ttnn_layout1>) -> tensor<2048x2048xbf16, #ttnn_layout> loc(#loc1)
        %2 = "ttnn.add"(%1, %1) <{activations = [], input_tensor_a_activations = [], input_tensor_b_activations = []}> : (tensor<2048x2048xbf16, #ttnn_layout>, tensor<2048x2048xbf16, #ttnn_layout>) -> tensor<2048x2048xbf16, #ttnn_layout> loc(#loc2)
        "ttnn.deallocate"(%1) <{force = false}> : (tensor<2048x2048xbf16, #ttnn_layout>) -> () loc(#loc2)
        %3 = "ttnn.reshape"(%2) <{shape = [4096 : i32, 1024 : i32]}> : (tensor<2048x2048xbf16, #ttnn_layout>) -> tensor<4096x1024xbf16, #ttnn_layout2> loc(#loc3)
        return %3 : tensor<4096x1024xbf16, #ttnn_layout2> loc(#loc)
      }
    }
  }
}
#loc = loc(unknown)
#loc1 = loc("dot")
#loc2 = loc("add")
#loc3 = loc("reshape")
"""

# By hand: the matmul is 2 * 2048^3 FLOPs; it reads 4,096 bfloat16 tiles (2,048 B each) and 4,096 bfloat8_b tiles
# (1,024 one-byte values and 64 shared exponents: 1,088 B each) and writes 4,096 bfloat16 tiles. The add is one FLOP
# an element and reads two, writes one 2048x2048 bfloat16 tensor.
MATMUL_FLOPS = 2 * 2048**3
MATMUL_BYTES = 4096 * 2048 + 4096 * 1088 + 4096 * 2048
ADD_FLOPS = 2048 * 2048
ADD_BYTES = 3 * 4096 * 2048


def test_flops_and_bytes_of_each_op_as_worked_out_by_hand():
    costs = op_costs(TINY_TTNN)
    assert [c.op for c in costs] == ["get_device", "matmul", "add", "deallocate", "reshape"]  # no const-eval op
    by_op = {c.op: c for c in costs}
    assert (by_op["matmul"].matmul_flops, by_op["matmul"].vector_flops) == (MATMUL_FLOPS, 0)
    assert by_op["matmul"].dram_bytes == MATMUL_BYTES == 21_233_664
    assert by_op["matmul"].math_fidelity == "hifi2"
    assert (by_op["add"].matmul_flops, by_op["add"].vector_flops, by_op["add"].dram_bytes) == (0, ADD_FLOPS, ADD_BYTES)
    assert by_op["reshape"].dram_bytes == by_op["deallocate"].dram_bytes == by_op["get_device"].dram_bytes == 0
    assert mesh_chips(TINY_TTNN) == 1


def test_the_entry_functions_arguments_at_their_device_size():
    weight, activation, host = main_arguments(TINY_TTNN)
    assert (weight.shape, weight.dtype, weight.nbytes, weight.in_dram) == ((2048, 2048), "bfp_bf8", 4096 * 1088, True)
    assert (activation.dtype, activation.nbytes) == ("bf16", 4096 * 2048)
    assert (host.shape, host.nbytes, host.in_dram) == ((8,), 32, False)


@pytest.mark.parametrize(
    "device, matmul_flops_per_s, bytes_per_s",
    [
        # Blackhole: 4,096 FLOPs a clock at 1.35 GHz per core at LoFi, half at HiFi2; 110 cores; 512 GB/s
        ("p150", 4096 * 1.35e9 / 2 * 110, 512e9),
        # Wormhole: 148 TFLOP/s over 72 cores at HiFi2 (BFP8), 64 worker cores; 288 GB/s (one chip: the mesh is 1x1)
        ("n150", 148e12 / 72 * 64, 288e9),
        ("n300", 148e12 / 72 * 64, 288e9),
    ],
)
def test_roofline_lower_bound_is_the_sum_of_each_ops_slower_limit(device, matmul_flops_per_s, bytes_per_s):
    program = program_roofline("decode_1", "decode", 1, 1, TINY_TTNN, PEAKS[device])
    assert (program.matmul_flops, program.vector_flops) == (MATMUL_FLOPS, ADD_FLOPS)
    assert program.dram_bytes == MATMUL_BYTES + ADD_BYTES
    assert program.chips == 1
    matmul = max(MATMUL_FLOPS / matmul_flops_per_s, MATMUL_BYTES / bytes_per_s)
    assert MATMUL_FLOPS / matmul_flops_per_s > MATMUL_BYTES / bytes_per_s  # this matmul is compute-bound
    assert program.compute_seconds == pytest.approx(MATMUL_FLOPS / matmul_flops_per_s)
    assert program.memory_seconds == pytest.approx((MATMUL_BYTES + ADD_BYTES) / bytes_per_s)
    assert program.seconds == pytest.approx(matmul + ADD_BYTES / bytes_per_s)


def test_memory_fit_counts_weights_and_the_kv_cache_of_every_user():
    # a Llama-3.1-8B-shaped cache in bfloat16: 2 (K, V) x 32 layers x 8 KV heads x 128 dims x 2 B = 131,072 B a token
    fit = MemoryFit(weight_bytes=16_000_000_000, kv_bytes_per_token=131_072, concurrency=32, context=8192,
                    dram_bytes=32_000_000_000)  # fmt: skip
    assert fit.kv_bytes == 34_359_738_368 and not fit.fits  # 16 GB + 34.4 GB > 32 GB
    assert fit.kv_tokens_that_fit == 122_070  # 16 GB left / 131,072 B
    smaller = MemoryFit(weight_bytes=16_000_000_000, kv_bytes_per_token=131_072, concurrency=4, context=8192,
                        dram_bytes=32_000_000_000)  # fmt: skip
    assert smaller.fits


def test_published_targets_are_tenstorrents_figures():
    (llama,) = published_targets("p150", "llm")
    assert (llama.model, llama.ttft_ms, llama.per_user) == ("Llama-3.1-8B-Instruct", 30.0, 37.0)
    n150 = {t.model: (t.ttft_ms, t.per_user) for t in published_targets("n150", "llm")}
    assert n150["Llama-3.1-8B-Instruct"] == (51.0, 21.0)
    assert [t.model for t in published_targets("p150", "detector")] == ["yolox_nano"]


def test_an_unknown_device_and_an_artifact_without_ttnn_programs_are_refused(tmp_path):
    with pytest.raises(OptionError, match="--device h100: not a Tenstorrent device"):
        device_report(tmp_path, None, "h100")
    cpu_artifact = SimpleNamespace(key="0123abcd", kind="llm", programs=[SimpleNamespace(name="decode", tt=None)])
    with pytest.raises(OptionError, match="0123abcd: no TTNN programs to model"):
        device_report(tmp_path, cpu_artifact, "p150")


def _decode_matmul_flops(config: dict, batch: int, keys: int) -> int:
    """A decode step's matmul FLOPs by hand: the projections and MLP of every layer, the attention over ``keys``
    keys, the LM head; per sequence."""
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    projections = hidden * (heads + 2 * kv_heads) * head_dim + heads * head_dim * hidden
    mlp = 3 * hidden * inter
    attention = 2 * heads * keys * head_dim  # scores and the weighted sum of values
    return 2 * batch * (config["num_hidden_layers"] * (projections + mlp + attention) + hidden * vocab)


def test_the_tiny_llamas_p150_programs(tt_compiled):
    result = tt_compiled("llama")
    manifest = result.manifest
    report = device_report(result.path, manifest, "p150")
    programs = {p.name: p for p in report.programs}
    assert list(programs) == ["prefill_32", "prefill_64", "decode_1", "decode_2"]
    config, keys = manifest.model.config, manifest.buckets.max_context  # decode attends over the whole block table
    assert programs["decode_1"].matmul_flops == _decode_matmul_flops(config, 1, keys)
    assert programs["decode_2"].matmul_flops == _decode_matmul_flops(config, 2, keys)
    assert programs["prefill_64"].matmul_flops > programs["prefill_32"].matmul_flops > 0
    for p in report.programs:  # a sum over ops of each op's larger time: never below the larger total (up to rounding)
        assert p.dram_bytes > 0 and p.seconds >= max(p.compute_seconds, p.memory_seconds) * (1 - 1e-12)
    assert report.ttft_seconds() == {32: programs["prefill_32"].seconds, 64: programs["prefill_64"].seconds}
    assert report.tokens_per_second_per_user()[1] == pytest.approx(1 / programs["decode_1"].seconds)
    # the weights as the programs take them: every float32 tensor of the model, at least
    float32_weights = sum(f.size for name, f in manifest.files.items() if name.endswith(".safetensors"))
    assert 0.5 * float32_weights < report.memory.weight_bytes
    assert report.memory.concurrency == 32 and report.memory.context == 8192 and report.memory.fits


def test_inspect_device_prints_the_specs_beside_tenstorrents_targets(tt_compiled, session_store):
    result = run_cli("inspect", tt_compiled("llama").key, "--device", "n150", cache_dir=session_store.root)
    assert result.returncode == 0, result.stderr
    for text in ("model specs on n150", "not measurements", "decode_2", "TTFT >= ", "tokens/s/user", "fits in",
                 "Tenstorrent's published targets on n150 (targets, not measurements", "Llama-3.1-8B-Instruct"):  # fmt: skip
        assert text in result.stdout, text
