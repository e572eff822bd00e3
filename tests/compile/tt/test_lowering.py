"""Lowering tiny Llama, Qwen2 and Qwen3 for a Blackhole p150 with the TT PJRT plugin in compile-only mode."""

from __future__ import annotations

import pytest
import torch

from ingot.artifacts.integrity import check_artifact
from ingot.compile.options import CompileOptions
from ingot.compile.pipeline import compile_model
from ingot.compile.tt.lowering import lower_programs
from ingot.errors import CompileError
from ingot.digest import sha256_file
from ingot.compile.tt.plugin import DESCRIPTORS
from tests.compile.tt.conftest import TT_TINY_OPTIONS

PROGRAMS = ["prefill_32", "prefill_64", "decode_1", "decode_2"]


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_each_family_lowers_every_program_to_ttnn(tt_compiled, family):
    result = tt_compiled(family)
    manifest = check_artifact(result.path)  # every file recorded with its sha256
    assert manifest.target == "p150"
    assert [p.name for p in manifest.programs] == PROGRAMS
    assert manifest.buckets.prefill_tokens == [32, 64] and manifest.buckets.decode_batch == [1, 2]
    for program in manifest.programs:
        tt = program.tt
        assert tt.status == "lowered" and not tt.unlowered_ops
        assert program.file == f"programs/{program.name}.ttnn"
        assert (result.path / program.file).stat().st_size > 0
        assert all((result.path / dump).is_file() for dump in tt.dumps)
        assert {"ttnn.matmul", "ttnn.softmax", "ttnn.rms_norm", "ttnn.rows_gather"} <= set(tt.ttnn_ops)
        assert tt.toolchain["plugin"] in ("jax-tt-plugin", "pjrt-plugin-tt")
        assert tt.toolchain["system_descriptor_sha256"] == sha256_file(DESCRIPTORS["p150"])
        assert tt.optimization_level == 0
        # Static shapes: the block table spans max context, the cache holds max_batch sequences + padding block
        shapes = {t.name: t.shape for t in tt.inputs}
        assert shapes["block_tables"] == [program.batch[0], 256 // 16]
        assert shapes["kv_cache"][2] == 2 * (256 // 16) + 1
        assert shapes["input_ids"] == [program.batch[0], program.tokens[0]]
        assert tt.outputs[0].name == "kv_cache (updated)"
        assert len(tt.weight_inputs) > 0
    # The float32 reference can be rebuilt from the artifact; running the programs needs the device.
    assert (result.path / "weights.safetensors").is_file() and (result.path / "tokenizer").is_dir()
    assert manifest.verification is None
    assert "p150" in manifest.tt.device_verification and "tt-metal" in manifest.tt.device_verification


def test_a_second_compile_is_a_cache_hit(tt_compiled, tiny_model, session_store):
    first = tt_compiled("llama")
    again = compile_model(str(tiny_model("llama")), CompileOptions.parse(**TT_TINY_OPTIONS), session_store, quiet=True)
    assert again.cache_hit and again.key == first.key


class TriangularSolve(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lower = torch.tril(x) + 32 * torch.eye(x.shape[0])
        return torch.linalg.solve_triangular(lower, x, upper=False)


class Softmax(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x @ x.T, dim=-1)


def _export(module: torch.nn.Module):
    return torch.export.export(module, (torch.randn(32, 32),))


def test_an_op_the_plugin_cannot_lower_fails_the_compile_naming_it(tmp_path):
    with pytest.raises(CompileError, match=r"solve: stablehlo\.triangular_solve.*--allow-cpu-fallback"):
        lower_programs([("solve", _export(TriangularSolve()))], tmp_path / "out", cache_dir=tmp_path)


def test_allow_cpu_fallback_records_the_ops_and_lowers_the_rest(tmp_path):
    out = tmp_path / "out"
    programs = [("solve", _export(TriangularSolve())), ("softmax", _export(Softmax()))]
    solve, softmax = lower_programs(programs, out, allow_cpu_fallback=True, cache_dir=tmp_path)
    assert solve.status == "cpu-fallback" and solve.unlowered_ops == ["stablehlo.triangular_solve"]
    assert not (out / "solve.ttnn").exists()
    assert softmax.status == "lowered" and (out / "softmax.ttnn").is_file()
    assert {"ttnn.matmul", "ttnn.softmax"} <= set(softmax.ttnn_ops)
    assert not list((tmp_path / "tt-sessions").iterdir())  # the session (and the plugin's assets) is gone
