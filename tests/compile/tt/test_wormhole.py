"""Wormhole n150 and n300: the tiny Llama compiled through tt-xla's compile-only descriptors, re-stamped with the
plugin's schema hash."""

from __future__ import annotations

import pytest

from ingot.artifacts.integrity import check_artifact
from ingot.compile.tt.plugin import DESCRIPTORS
from ingot.digest import sha256_file
from tests.conftest import run_cli


@pytest.mark.parametrize("target, chips", [("n150", 1), ("n300", 2)])
def test_the_tiny_llama_lowers_for_wormhole_with_an_8x8_grid(tt_wormhole, target, chips):
    result = tt_wormhole(target)
    manifest = check_artifact(result.path)
    assert manifest.target == target and [p.name for p in manifest.programs] == ["prefill_32", "decode_1"]
    descriptor = manifest.tt.descriptor
    assert descriptor.file == f"{target}.ttsys" and descriptor.sha256 == sha256_file(DESCRIPTORS[target])
    assert descriptor.restamped.repository.endswith("/tt-xla") and descriptor.restamped.field == "schema_hash"
    for program in manifest.programs:
        tt = program.tt
        assert tt.status == "lowered" and tt.optimization_level == 0
        assert tt.toolchain["system_descriptor_sha256"] == descriptor.sha256
        assert (result.path / program.file).stat().st_size > 0
        ttnn_mlir = (result.path / f"programs/{program.name}.ttnn.mlir").read_text()
        assert "arch = <wormhole_b0>, grid = 8x8" in ttnn_mlir and "blackhole" not in ttnn_mlir
        assert ttnn_mlir.count("arch = <wormhole_b0>") == chips
        assert {"ttnn.matmul", "ttnn.softmax", "ttnn.rms_norm"} <= set(tt.ttnn_ops)
        assert tt.conversion.passed


def test_inspect_says_the_descriptor_is_a_restamped_tt_xla_one(tt_wormhole, session_store):
    result = run_cli("inspect", tt_wormhole("n150").key, cache_dir=session_store.root)
    assert result.returncode == 0, result.stderr
    for text in ("TT-NN programs for Tenstorrent Wormhole n150", "system descriptor n150.ttsys",
                 "re-stamped from https://github.com/tenstorrent/tt-xla", "one field changed: schema_hash",
                 "Apache-2.0", "conversion check"):  # fmt: skip
        assert text in result.stdout, text
