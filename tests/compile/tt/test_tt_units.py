"""The TT pieces that need no plugin run: device specs, the cache key, the op parser, the torchax shim."""

from __future__ import annotations

import hashlib

import pytest
import torch

from ingot.compile.options import CompileOptions
from ingot.compile.pipeline import cache_key
from ingot.compile.tt import plugin
from ingot.compile.tt.ops import is_fused, op_histogram, unlowered_ops
from ingot.compile.tt.specs import BLACKHOLE_P150, device_spec, model_shapes, optimization_level
from ingot.compile.tt.torchax_compat import REMOVED_OVERLOADS, import_torchax
from ingot.errors import OptionError


def test_p150_shapes_round_prefill_buckets_to_tiles_and_fix_the_cache():
    options = CompileOptions.parse(target="p150", max_batch=8, max_context=1024, prefill_buckets=(16, 32, 100))
    shapes = model_shapes(BLACKHOLE_P150, options)
    assert shapes.prefill_buckets == [32, 128]
    assert shapes.decode_batches == [1, 2, 4, 8]
    assert options.block_size == 32  # TT's paged cache ops need blocks of a multiple of 32 tokens
    assert shapes.blocks_per_sequence == 1024 // 32 and shapes.cache_blocks == 8 * 32 + 1


def test_p150_spec_limits_are_enforced():
    with pytest.raises(OptionError, match="max concurrency 32"):
        model_shapes(BLACKHOLE_P150, CompileOptions.parse(target="p150", max_batch=64))
    with pytest.raises(OptionError, match="max context 8192"):
        model_shapes(BLACKHOLE_P150, CompileOptions.parse(target="p150", max_context=16384))
    with pytest.raises(OptionError, match="not a Tenstorrent target"):
        device_spec("n999")


@pytest.mark.parametrize("target", ["n150", "n300"])
def test_wormhole_compiles_at_level_0_only_and_says_why(target):
    spec = device_spec(target)
    assert spec.arch == "wormhole_b0" and optimization_level(spec, None) == 0
    for level in (1, 2):
        with pytest.raises(OptionError, match=f"--optimization-level {level} on {target}: .*no Wormhole firmware"):
            optimization_level(spec, level)
        with pytest.raises(OptionError, match="re-stamped tt-xla"):
            cache_key({"config": "c"}, CompileOptions.parse(target=target, optimization_level=level))
    assert optimization_level(BLACKHOLE_P150, 2) == 2


@pytest.mark.parametrize("target", ["n150", "n300"])
def test_the_wormhole_descriptors_are_tt_xlas_with_only_the_schema_hash_rewritten(target):
    info = plugin.descriptor_info(target)
    stamp = info.restamped
    shipped = plugin.DESCRIPTORS[target].read_bytes()
    assert info.sha256 == hashlib.sha256(shipped).hexdigest() and "re-stamped" in info.origin
    assert stamp.repository == "https://github.com/tenstorrent/tt-xla" and stamp.field == "schema_hash"
    assert stamp.path == f"tests/cpu_compile_only/system_descs/{target}_system_desc.ttsys"
    # the plugin's schema hash, as in the p150 descriptor captured from the plugin itself
    assert stamp.replacement.encode() in plugin.DESCRIPTORS["p150"].read_bytes()
    assert shipped.count(stamp.replacement.encode()) == 1
    original = shipped.replace(stamp.replacement.encode(), stamp.original.encode())
    assert hashlib.sha256(original).hexdigest() == stamp.original_sha256  # one field, same length: nothing else moved
    license_text = (plugin.DESCRIPTOR_DIR / "LICENSE-tt-xla").read_text()
    assert "Apache License" in license_text and "Version 2.0" in license_text
    assert "Tenstorrent" in (plugin.DESCRIPTOR_DIR / "NOTICE-tt-xla").read_text()
    assert plugin.descriptor_info("p150").restamped is None


def test_each_target_has_its_own_cache_key():
    digests = {"config": "c", "weights": "w"}
    keys = {cache_key(digests, CompileOptions.parse(target=t)) for t in ("cpu", "p150", "n150", "n300")}
    assert len(keys) == 4


def test_cache_key_covers_plugin_descriptor_and_optimization_level(monkeypatch):
    digests = {"config": "c", "weights": "w"}
    options = CompileOptions.parse(target="p150")
    base = cache_key(digests, options)
    assert base != cache_key(digests, CompileOptions.parse())  # the target
    assert base != cache_key(digests, CompileOptions.parse(target="p150", optimization_level=1))
    real = plugin.toolchain("p150")
    assert real["system_descriptor_sha256"] == "32a541aa843196cd5da75e595071da653c25b19b3b126725424c10dfb01c240f"
    for field, value in [("plugin_version", "9.9.9"), ("system_descriptor_sha256", "0" * 64), ("torchax", "0.1")]:
        monkeypatch.setattr(plugin, "toolchain", lambda target, f=field, v=value: {**real, f: v})
        assert cache_key(digests, options) != base, field


def test_op_histogram_and_unlowered_ops_parse_the_plugins_text():
    mlir = '%0 = "ttnn.get_device"() : () -> !ttnn.device\n%1 = "ttnn.matmul"(%a, %b)\n%2 = "ttnn.matmul"(%1, %b)\n'
    assert op_histogram(mlir) == {"ttnn.matmul": 2, "ttnn.get_device": 1}
    # activations fused into another op's attributes count as ops of their own, marked fused
    fused = (
        '%3 = "ttnn.subtract"(%1, %2) <{activations = [#ttnn.unary_with_param<op_type = exp>], dtype = f32}>\n'
        '%4 = "ttnn.multiply"(%3, %2) <{activations = [], input_tensor_a_activations = '
        "[#ttnn.unary_with_param<op_type = silu>], input_tensor_b_activations = []}>\n"
        '%5 = "ttnn.matmul"(%4, %b) <{activation = "silu", transpose_a = false}>\n'
        '%6 = "ttnn.matmul"(%5, %b) <{fused_activation = #ttnn.unary_with_param<op_type = gelu>}>\n'
        '%7 = "ttnn.add"(%6, %6) <{activations = [], input_tensor_a_activations = [], '
        "input_tensor_b_activations = []}>\n"
    )
    histogram = op_histogram(fused)
    assert histogram == {
        "ttnn.matmul": 2, "ttnn.silu (fused)": 2, "ttnn.subtract": 1, "ttnn.exp (fused)": 1, "ttnn.multiply": 1,
        "ttnn.gelu (fused)": 1, "ttnn.add": 1,
    }  # fmt: skip
    assert [op for op in histogram if is_fused(op)] == ["ttnn.silu (fused)", "ttnn.exp (fused)", "ttnn.gelu (fused)"]
    error = "INTERNAL: failed to legalize operation 'stablehlo.triangular_solve'; Failed to convert from SHLO to TTIR"
    assert unlowered_ops(error) == ["stablehlo.triangular_solve"]
    assert unlowered_ops("AssertionError: aten.foo.default\n\nWhile executing %foo") == ["aten.foo.default"]


def test_torchax_imports_on_this_torch_and_only_the_listed_overloads_are_tolerated():
    torchax = import_torchax()
    assert hasattr(torchax, "export") and len(REMOVED_OVERLOADS) == 21
    with pytest.raises(AttributeError):  # the shim is gone once torchax is imported
        torch.ops.aten.prod.dim_Dimname
    assert torch.ops.aten.prod.dim_int is not None


def test_the_shim_tolerates_nothing_but_the_removed_overloads():
    from ingot.compile.tt.torchax_compat import _tolerate_removed_overloads

    with _tolerate_removed_overloads():
        assert "removed in torch" in repr(torch.ops.aten.prod.dim_Dimname)
        with pytest.raises(AttributeError):
            torch.ops.aten.prod.no_such_overload
