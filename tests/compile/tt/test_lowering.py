"""Lowering tiny Llama, Qwen2 and Qwen3 for a Blackhole p150 with the TT PJRT plugin in compile-only mode."""

from __future__ import annotations

import pytest
import torch

from ingot.artifacts.integrity import check_artifact
from ingot.compile.llm.kind import compile_model
from ingot.compile.options import CompileOptions
from ingot.compile.tt.lowering import _raise_for_failures, lower_programs
from ingot.compile.tt.plugin import DESCRIPTORS
from ingot.digest import sha256_file
from ingot.errors import CompileError
from tests.compile.tt.conftest import TT_TINY_OPTIONS

PROGRAMS = {
    "llama": (["prefill_32", "prefill_64", "decode_1", "decode_2"], [32, 64], [1, 2]),
    "qwen2": (["prefill_32", "decode_1"], [32], [1]),
    "qwen3": (["prefill_32", "decode_1"], [32], [1]),
}


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_each_family_lowers_every_program_to_ttnn(tt_compiled, family):
    result = tt_compiled(family)
    manifest = check_artifact(result.path)  # every file recorded with its sha256
    assert manifest.target == "p150"
    names, prefill, decode = PROGRAMS[family]
    assert [p.name for p in manifest.programs] == names
    assert manifest.buckets.prefill_tokens == prefill and manifest.buckets.decode_batch == decode
    max_batch = decode[-1]
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
        # (blocks of 32 tokens, TT's default; per layer a key and a value cache, test_paged_cache.py)
        shapes = {t.name: t.shape for t in tt.inputs}
        assert shapes["block_tables"] == [program.batch[0], 256 // 32]
        assert shapes["kv_cache_0"][0] == max_batch * (256 // 32) + 1
        assert shapes["input_ids"] == [program.batch[0], program.tokens[0]]
        assert tt.outputs[0].name == "kv_cache_0 (updated)"
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


class WideSoftmaxAndGate(torch.nn.Module):
    """A softmax over 2,048 keys and a SiLU gate on the same scores: tt-mlir fuses the exp into a subtract and the
    SiLU into the multiply."""

    def __init__(self) -> None:
        super().__init__()
        self.keys = torch.nn.Parameter(torch.randn(32, 2048))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = x @ self.keys
        return torch.softmax(scores, dim=-1), torch.nn.functional.silu(scores) * scores


def _export(module: torch.nn.Module):
    return torch.export.export(module, (torch.randn(32, 32),))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A program with an op the plugin cannot lower beside ones it can, lowered with --allow-cpu-fallback."""
    tmp = tmp_path_factory.mktemp("mixed")
    programs = [("solve", _export(TriangularSolve())), ("softmax", _export(Softmax())),
                ("fused", _export(WideSoftmaxAndGate()))]  # fmt: skip
    return tmp, lower_programs(programs, tmp / "out", allow_cpu_fallback=True, cache_dir=tmp)


def test_the_op_histogram_counts_fused_activations(mixed):
    _, (_, _, fused) = mixed
    ops = fused.ttnn_ops
    assert ops["ttnn.exp (fused)"] == 1 and ops["ttnn.silu (fused)"] == 1
    # at 2,048 keys the softmax is decomposed, its exp fused into a subtract; neither exp nor silu is an op of its own
    assert not {"ttnn.softmax", "ttnn.exp", "ttnn.silu"} & set(ops) and {"ttnn.subtract", "ttnn.multiply"} <= set(ops)


def test_allow_cpu_fallback_records_the_ops_and_lowers_the_rest(mixed):
    tmp, (solve, softmax, _) = mixed
    assert solve.status == "cpu-fallback" and solve.unlowered_ops == ["stablehlo.triangular_solve"]
    assert not (tmp / "out" / "solve.ttnn").exists()
    assert softmax.status == "lowered" and (tmp / "out" / "softmax.ttnn").is_file()
    assert {"ttnn.matmul", "ttnn.softmax"} <= set(softmax.ttnn_ops)
    assert not list((tmp / "tt-sessions").iterdir())  # the session (and the plugin's assets) is gone


def test_an_op_the_plugin_cannot_lower_fails_the_compile_naming_it(mixed):
    # The same results without --allow-cpu-fallback: lower_programs ends with this check.
    _, results = mixed
    with pytest.raises(CompileError, match=r"solve: stablehlo\.triangular_solve.*--allow-cpu-fallback"):
        _raise_for_failures(results, allow_cpu_fallback=False)


def test_a_capture_that_fails_stops_the_workers_waiting_for_it(tmp_path):
    # The workers start before the programs are captured: one lowers the first while the other waits for the second,
    # whose capture fails; the call raises that failure, and no worker is left waiting, no session left behind.
    def captures():
        yield "softmax", _export(Softmax())
        raise RuntimeError("capture failed")

    with pytest.raises(RuntimeError, match="capture failed"):
        lower_programs(captures(), tmp_path / "out", cache_dir=tmp_path, names=["softmax", "second"], workers=2)
    assert not list((tmp_path / "tt-sessions").iterdir())
