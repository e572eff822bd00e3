"""The TT pieces that need no plugin run: device specs, the cache key, the op parser, the torchax shim."""

from __future__ import annotations

import pytest
import torch

from ingot.compile.options import CompileOptions
from ingot.compile.pipeline import cache_key
from ingot.compile.tt import plugin
from ingot.compile.tt.ops import op_histogram, unlowered_ops
from ingot.compile.tt.specs import BLACKHOLE_P150, device_spec, model_shapes
from ingot.compile.tt.torchax_compat import REMOVED_OVERLOADS, import_torchax
from ingot.errors import OptionError


def test_p150_shapes_round_prefill_buckets_to_tiles_and_fix_the_cache():
    options = CompileOptions.parse(target="p150", max_batch=8, max_context=1024, prefill_buckets=(16, 32, 100))
    shapes = model_shapes(BLACKHOLE_P150, options)
    assert shapes.prefill_buckets == [32, 128]
    assert shapes.decode_batches == [1, 2, 4, 8]
    assert shapes.blocks_per_sequence == 64 and shapes.cache_blocks == 8 * 64 + 1


def test_p150_spec_limits_are_enforced():
    with pytest.raises(OptionError, match="max concurrency 32"):
        model_shapes(BLACKHOLE_P150, CompileOptions.parse(target="p150", max_batch=64))
    with pytest.raises(OptionError, match="max context 8192"):
        model_shapes(BLACKHOLE_P150, CompileOptions.parse(target="p150", max_context=16384))
    with pytest.raises(OptionError, match="Wormhole"):
        device_spec("n150")


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
