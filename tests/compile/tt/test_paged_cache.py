"""A TT program's KV cache: per layer in TT's paged layout, written in place by ttnn.paged_update_cache (decode) and
ttnn.paged_fill_cache (prefill), never by a scatter over the whole cache; and checked by the conversion check."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.manifest import ProgramSpec, TensorSpec, TtProgramInfo
from ingot.compile.options import CompileOptions
from ingot.compile.tt import paged_cache  # noqa: F401  (registers torch.ops.ingot.tt_paged_*)
from ingot.compile.verify.tt_conversion_inputs import step_inputs
from ingot.errors import OptionError
from ingot.runtime.block_manager import PAD_BLOCK
from tests.conftest import run_cli

LAYERS, KV_HEADS, HEAD_DIM, BLOCK_SIZE = 2, 2, 16, 32  # the tiny Llama, at TT's default block size


def test_decode_and_prefill_write_per_layer_caches_with_tts_paged_ops(tt_compiled):
    result = tt_compiled("llama")
    manifest = check_artifact(result.path)
    paged = manifest.kv_cache.paged
    caches = [f"kv_cache_{i}" for i in range(2 * LAYERS)]
    cache_blocks = 2 * (256 // BLOCK_SIZE) + 1  # max_batch full sequences and the padding block
    assert manifest.kv_cache.block_size == BLOCK_SIZE
    assert paged.inputs == caches and paged.shape == [cache_blocks, KV_HEADS, BLOCK_SIZE, HEAD_DIM]
    assert (paged.prefill_writes, paged.decode_writes) == ("ttnn.paged_fill_cache", "ttnn.paged_update_cache")
    for program in manifest.programs:
        tt = program.tt
        shapes = {t.name: t.shape for t in tt.inputs}
        assert "kv_cache" not in shapes and all(shapes[name] == paged.shape for name in caches)
        assert [t.name for t in tt.outputs[: len(caches)]] == [f"{name} (updated)" for name in caches]
        ttnn = (result.path / f"programs/{program.name}.ttnn.mlir").read_text()
        assert "rows_scatter" not in ttnn and "ttnn.rows_scatter" not in tt.ttnn_ops
        writes = paged.prefill_writes if program.kind == "prefill" else paged.decode_writes
        other = paged.decode_writes if program.kind == "prefill" else paged.prefill_writes
        assert tt.ttnn_ops[writes] == 2 * LAYERS and other not in tt.ttnn_ops, program.name  # a K and a V per layer
        # written in place: the TT-NN cache op returns nothing, the program's cache argument is what it writes
        assert all(line.rstrip().endswith("-> ()") or "-> () loc(" in line for line in ttnn.splitlines()
                   if f'"{writes}"' in line)  # fmt: skip
        check = tt.conversion  # the JAX function (its paged writes as a scatter on JAX's CPU) vs the torch program
        assert check.passed and check.outputs["kv_cache"].pcc >= 0.99999, program.name
        assert check.outputs["logits"].pcc >= 0.99999 and check.max_abs_error < 1e-3, program.name


def test_inspect_shows_the_paged_cache_and_no_scatter(tt_compiled, session_store):
    shown = run_cli("inspect", tt_compiled("llama").key, cache_dir=session_store.root)
    assert shown.returncode == 0, shown.stderr
    assert "ttnn.paged_update_cache" in shown.stdout and "ttnn.paged_fill_cache" in shown.stdout
    assert "rows_scatter" not in shown.stdout


def test_the_jax_primitives_compute_on_cpu_what_the_torch_ops_compute():
    """The conversion check runs the primitives' CPU lowering against the torch ops: they must mean the same."""
    script = """
import sys, numpy as np, torch, jax
from ingot.compile.tt.paged_cache_jax import paged_fill_cache_p, paged_update_cache_p
rng = np.random.default_rng(0)
cache = rng.standard_normal((9, 2, 32, 16), dtype=np.float32)
update = rng.standard_normal((1, 3, 2, 16), dtype=np.float32)
positions, table = np.array([5, 40, 0], np.int32), np.array([[3, 4], [7, 2], [0, 0]], np.int32)
fill, fill_table = rng.standard_normal((1, 2, 40, 16), dtype=np.float32), np.array([[8, 1, 6]], np.int32)
cases = [(paged_update_cache_p, torch.ops.ingot.tt_paged_update_cache, (cache, update, positions, table)),
         (paged_fill_cache_p, torch.ops.ingot.tt_paged_fill_cache, (cache, fill, fill_table, np.zeros(1, np.int32)))]
for primitive, op, args in cases:
    on_jax = np.asarray(jax.jit(primitive.bind)(*args))
    on_torch = op(*map(torch.from_numpy, args)).numpy()
    np.save(sys.stdout.buffer, np.stack([on_jax, on_torch]))
"""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, check=True)
    stream = io.BytesIO(done.stdout)
    (update_jax, update_torch), (fill_jax, fill_torch) = np.load(stream), np.load(stream)
    assert np.array_equal(update_jax, update_torch) and np.array_equal(fill_jax, fill_torch)


def test_the_torch_ops_write_only_the_paged_slots():
    cache = torch.randn(9, 2, 32, 16)
    value = torch.randn(1, 3, 2, 16)
    positions, table = torch.tensor([5, 40, 0]), torch.tensor([[3, 4], [7, 2], [0, 0]])
    updated = torch.ops.ingot.tt_paged_update_cache(cache, value, positions, table)
    assert torch.equal(updated[3, :, 5], value[0, 0]) and torch.equal(updated[2, :, 8], value[0, 1])
    written = torch.zeros(9, 32, dtype=torch.bool)
    written[3, 5] = written[2, 8] = written[0, 0] = True
    unwritten = updated.transpose(1, 2)[~written], cache.transpose(1, 2)[~written]  # [slots, kv_heads, head_dim]
    assert torch.equal(*unwritten) and not torch.equal(cache, updated)
    tokens = torch.randn(1, 2, 40, 16)  # 40 tokens fill block 8, then 8 of block 1's 32 slots
    filled = torch.ops.ingot.tt_paged_fill_cache(cache, tokens, torch.tensor([[8, 1, 6]]), torch.tensor([0]))
    assert torch.equal(filled[8], tokens[0, :, :32]) and torch.equal(filled[1, :, :8], tokens[0, :, 32:])
    assert torch.equal(filled[1, :, 8:], cache[1, :, 8:]) and torch.equal(filled[6], cache[6])


def _paged_step(batch: int, tokens: int, blocks: int = 8) -> ProgramSpec:
    cache = [batch * blocks + 1, KV_HEADS, BLOCK_SIZE, HEAD_DIM]
    shapes = {"input_ids": [batch, tokens], "position_ids": [batch, tokens], "slot_mapping": [batch, tokens],
              "block_tables": [batch, blocks], "logits_index": [batch]}  # fmt: skip
    shapes.update({f"kv_cache_{i}": cache for i in range(2 * LAYERS)})
    info = TtProgramInfo(
        status="lowered", ttnn_ops={}, toolchain={}, optimization_level=0, seconds=0.0,
        inputs=[TensorSpec(name=n, dtype="int32", shape=s) for n, s in shapes.items()],
    )  # fmt: skip
    kind = "decode" if tokens == 1 else "prefill"
    return ProgramSpec(name="p", kind=kind, file="", tt=info, batch=(batch, batch), tokens=(tokens, tokens),
                       inputs=[], outputs=[])  # fmt: skip


@pytest.mark.parametrize("batch, tokens", [(1, 32), (1, 64), (2, 1)])
def test_the_check_fills_every_layers_cache_and_starts_a_prefill_chunk_at_a_block(batch, tokens):
    inputs = step_inputs(_paged_step(batch, tokens), vocab_size=100, max_context=256)
    caches = [inputs[f"kv_cache_{i}"] for i in range(2 * LAYERS)]
    assert "kv_cache" not in inputs and all(c.std() > 0.5 for c in caches)  # filled, each its own values
    assert not np.array_equal(caches[0], caches[1])
    start = inputs["position_ids"][0, 0]
    assert start > 0 and inputs["block_tables"][0, start // BLOCK_SIZE] != PAD_BLOCK
    if tokens > 1:  # paged_fill_cache writes from the first block of the chunk: the chunk must start one
        assert start % BLOCK_SIZE == 0


def test_tt_targets_default_to_blocks_of_32_and_refuse_blocks_their_cache_ops_cannot_write():
    assert CompileOptions.parse(target="p150").block_size == 32
    assert CompileOptions.parse(target="cpu").block_size == 16  # the cpu target keeps its default
    with pytest.raises(OptionError, match=r"--block-size 16 on n150: .*multiple of 32"):
        CompileOptions.parse(target="n150", block_size=16)
