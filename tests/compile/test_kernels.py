"""ingot's native kernels against the computations they replace: paged decode attention against attention
written out over a gathered context (over a float32 or a bfloat16 cache), the packed matrix product against
``linear``; and the AVX2 build of each on this machine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ingot.artifacts.weight_format import WeightFormat
from ingot.compile.cpu.packed_linears import pack_linear_weight, unpack_linear_weight
from ingot.compile.kernels import build_kernels, library_file
from tests.compile.test_packed_formats import arbitrary_records, extreme_weights


@pytest.fixture(scope="module")
def library() -> Path:
    return build_kernels()


def _reference(query, kv_cache, layer, tables, lengths, scale):
    """Each sequence's context gathered through its block table, softmax attention in float64 (over a bfloat16
    cache's values exactly: each converts to float32, then float64, without rounding)."""
    _, _, _, block_size, kv_heads, head_dim = kv_cache.shape
    group = query.shape[1] // kv_heads
    out = torch.empty_like(query, dtype=torch.float64)
    for b, length in enumerate(lengths.tolist()):
        keys = kv_cache[layer, 0][tables[b]].reshape(-1, kv_heads, head_dim)[:length].double()
        values = kv_cache[layer, 1][tables[b]].reshape(-1, kv_heads, head_dim)[:length].double()
        for head in range(query.shape[1]):
            kv = head // group
            weights = (keys[:, kv] @ query[b, head].double() * scale).softmax(0)
            out[b, head] = weights @ values[:, kv]
    return out


# groups of 3, 1, 4, 2, 7, and 16 (two passes of 8 query rows); every head dim the kernel takes
ATTENTION_SHAPES = [(9, 3, 64, 16), (4, 4, 32, 8), (8, 2, 128, 32), (2, 1, 16, 16), (14, 2, 64, 16), (16, 1, 32, 8)]


def _attention_args(seed, layers, layer, num_blocks, lengths, heads, kv_heads, head_dim, block_size, dtype):
    """The kernel's arguments: layer ``layer`` of a random cache of ``dtype``, one random block table (of the
    blocks ``lengths`` need at most) per length."""
    generator = torch.Generator().manual_seed(seed)
    batch, width = len(lengths), -(-int(lengths.max()) // block_size)
    kv_cache = torch.randn(layers, 2, num_blocks, block_size, kv_heads, head_dim, generator=generator).to(dtype)
    query = torch.randn(batch, heads, head_dim, generator=generator)
    tables = torch.randperm(num_blocks, generator=generator)[: batch * width].reshape(batch, width)
    return query, kv_cache, layer, tables, lengths, head_dim**-0.5


def _attention_case(heads, kv_heads, head_dim, block_size, dtype=torch.float32):
    """Layer 1 of two, five sequences: one token, a block boundary, a partial block, the full table but one, the
    full table (6 blocks)."""
    lengths = torch.tensor([1, block_size, block_size + 3, 6 * block_size - 1, 6 * block_size])
    return _attention_args(heads * head_dim, 2, 1, 40, lengths, heads, kv_heads, head_dim, block_size, dtype)


def _long_context_case(heads, kv_heads, head_dim, block_size, dtype=torch.float32):
    """Contexts of one segment of a work item (256 tokens), one more token, and several segments."""
    lengths = torch.tensor([256, 257, 700, 1000])
    num_blocks = len(lengths) * -(-1000 // block_size) + 3
    shape = (heads, kv_heads, head_dim, block_size)
    return _attention_args(heads * head_dim + 1, 1, 0, num_blocks, lengths, *shape, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads, kv_heads, head_dim, block_size", ATTENTION_SHAPES)
def test_kernel_attends_over_blocks_anywhere_in_the_cache(library, heads, kv_heads, head_dim, block_size, dtype):
    """A bfloat16 cache (--kv-cache-dtype bf16) is read as it is stored: float32 attention over its values."""
    case = _attention_case(heads, kv_heads, head_dim, block_size, dtype)
    out = torch.ops.ingot.paged_decode_attention(*case)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), _reference(*case), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("heads, kv_heads, head_dim, block_size", [(9, 3, 64, 16), (16, 1, 32, 8), (8, 2, 128, 32)])
def test_kernel_splits_a_long_context_and_combines_its_parts(library, heads, kv_heads, head_dim, block_size):
    """A long context is cut into parts the threads share, even for a single sequence: the parts' softmax states
    combine into the same attention."""
    case = _long_context_case(heads, kv_heads, head_dim, block_size, torch.bfloat16)
    out = torch.ops.ingot.paged_decode_attention(*case)
    torch.testing.assert_close(out.double(), _reference(*case), atol=1e-5, rtol=1e-5)


def test_kernel_gives_a_sequence_the_same_bits_in_any_batch_and_on_any_number_of_threads(library):
    """How the work is cut depends on each sequence's own context only, so its logits do not depend on what else
    is in the batch or on the threads."""
    query, kv_cache, layer, tables, lengths, scale = _long_context_case(9, 3, 64, 16, torch.bfloat16)
    batched = torch.ops.ingot.paged_decode_attention(query, kv_cache, layer, tables, lengths, scale)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            for b in range(len(lengths)):
                alone = torch.ops.ingot.paged_decode_attention(
                    query[b : b + 1], kv_cache, layer, tables[b : b + 1], lengths[b : b + 1], scale
                )
                assert torch.equal(alone[0], batched[b])
    finally:
        torch.set_num_threads(threads)


def test_kernel_reads_a_bfloat16_cache_as_the_float32_cache_of_its_values(library):
    """Widening bfloat16 to float32 is exact, so the kernel gives the same bits over either cache of the same
    values."""
    query, kv_cache, layer, tables, lengths, scale = _attention_case(8, 2, 64, 16, torch.bfloat16)
    narrow = torch.ops.ingot.paged_decode_attention(query, kv_cache, layer, tables, lengths, scale)
    wide = torch.ops.ingot.paged_decode_attention(query, kv_cache.float(), layer, tables, lengths, scale)
    assert torch.equal(narrow, wide)


def test_loading_another_copy_of_the_library_registers_nothing_twice(library, tmp_path):
    """Every artifact carries its own copy: a process serving two artifacts loads two copies."""
    copy = tmp_path / "copy" / library.name
    copy.parent.mkdir()
    shutil.copyfile(library, copy)
    script = (
        "import sys, torch\n"
        "torch.ops.load_library(sys.argv[1]); torch.ops.load_library(sys.argv[2])\n"
        "cache = torch.ones(1, 2, 2, 4, 1, 16)\n"
        "out = torch.ops.ingot.paged_decode_attention(torch.ones(1, 1, 16), cache, 0, torch.tensor([[1]]),"
        " torch.tensor([3]), 1.0)\n"
        "print(out.sum().item())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(library), str(copy)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == 16.0


# every remainder of the 8-row tile (1-7, and none at 32); column counts off the 48-wide panel (1-4 panels: even
# shares and claimed tail at their smallest); one of SmolLM2's projections (20 panels: 15 shared, 5 claimed);
# decode steps of many streams (rows in groups); prefill's row counts: blocks of 128 rows, the last partial, and inputs wider than a k block of 1024 (a partial
# one after full ones, and two full ones)
PACKED_LINEAR_SHAPES = [
    (1, 64, 32),
    (10, 50, 24),
    (11, 100, 33),
    (12, 30, 8),
    (13, 176, 40),
    (14, 96, 16),
    (7, 50, 24),
    (32, 960, 576),
    (20, 100, 40),
    (27, 150, 1100),
    (128, 100, 64),
    (300, 100, 1100),
    (129, 50, 2048),
    (3, 200, 3000),
]


@pytest.mark.parametrize("rows, out_features, in_features", PACKED_LINEAR_SHAPES)
def test_packed_linear_matches_linear(library, rows, out_features, in_features):
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(out_features, in_features, generator=generator)
    bias = torch.randn(out_features, generator=generator)
    x = torch.randn(rows, 1, in_features, generator=generator)
    packed = pack_linear_weight(weight)
    for b in (bias, None):
        out = torch.ops.ingot.packed_linear(x, packed, out_features, b)
        torch.testing.assert_close(out, torch.nn.functional.linear(x, weight, b), atol=_atol(in_features), rtol=1e-5)


def _atol(in_features: int) -> float:
    """A sum over more terms rounds more, in whatever order."""
    return 1e-4 * max(1.0, in_features / 1000)


@pytest.mark.parametrize("in_features", [96, 2500])  # within one k block of 1024, and over three
def test_packed_linear_gives_a_row_the_same_bits_in_any_batch(library, in_features):
    """A sequence's logits must not depend on what else is in the step: a decode step's few rows or a prefill
    step's hundreds, whatever tile or row block the row falls in."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(200, in_features, generator=generator)
    bias = torch.randn(200, generator=generator)
    x = torch.randn(300, in_features, generator=generator)
    packed = pack_linear_weight(weight)
    for b in (bias, None):
        batches = {rows: torch.ops.ingot.packed_linear(x[:rows], packed, 200, b) for rows in (17, 130, 300)}
        for row in (0, 5, 16):
            alone = torch.ops.ingot.packed_linear(x[row : row + 1], packed, 200, b)
            for batched in batches.values():
                assert torch.equal(alone[0], batched[row])
        for row in (129, 299):
            assert torch.equal(torch.ops.ingot.packed_linear(x[row : row + 1], packed, 200, b)[0], batches[300][row])


# In a process of its own: this one has loaded the native build, whose ops an AVX2 build would register again.
AVX2_CHECK = """
import sys, torch
from ingot.compile.kernels import build_kernels
build_kernels("avx2")
linears, attention = torch.load(sys.argv[1])
for x, packed, fmt, weight, bias, out_features, expected in linears:
    out = torch.ops.ingot.packed_linear(x, packed, out_features, bias, fmt)
    atol = 1e-4 * max(1.0, x.shape[-1] / 1000)
    torch.testing.assert_close(out, torch.nn.functional.linear(x, weight, bias), atol=atol, rtol=1e-5)
    assert torch.equal(out, expected), f"{fmt}: not the bits of the AVX-512 build"
x, packed, fmt, weight, bias, out_features, _ = next(case for case in linears if case[2] == "bfp8")
try:
    torch.ops.ingot.packed_linear(x, packed, out_features, bias, fmt, True)
except RuntimeError as error:
    assert "bf16_inputs needs ingot's AVX-512 build" in str(error), error
else:
    raise AssertionError("the AVX2 build took bf16_inputs")
for case, expected in attention:
    out = torch.ops.ingot.paged_decode_attention(*case)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
"""


def _linear_cases(generator: torch.Generator) -> list[tuple]:
    """Every format at every shape, against the native build's output; and times the identity, the decoded
    weights themselves, bit for bit."""
    cases = []
    for fmt in WeightFormat:
        for rows, out_features, in_features in PACKED_LINEAR_SHAPES:
            weight = torch.randn(out_features, in_features, generator=generator)
            bias = torch.randn(out_features, generator=generator)
            x = torch.randn(rows, in_features, generator=generator)
            packed = pack_linear_weight(weight, fmt)
            native = torch.ops.ingot.packed_linear(x, packed, out_features, bias, fmt.value)
            decoded = unpack_linear_weight(packed, out_features, fmt).contiguous()
            cases.append((x, packed, fmt.value, decoded, bias, out_features, native))
        weight = extreme_weights(101, 40)
        packed = pack_linear_weight(weight, fmt)
        decoded = unpack_linear_weight(packed, 101, fmt).contiguous()
        for rows in (40, 24):  # prefill's row counts and a decode step's
            identity = torch.eye(40)[:rows]
            native = torch.ops.ingot.packed_linear(identity, packed, 101, None, fmt.value)
            assert torch.equal(native, decoded.T[:rows])
            cases.append((identity, packed, fmt.value, decoded, None, 101, native))
        if fmt in (WeightFormat.BFP8, WeightFormat.BFP4):
            packed = arbitrary_records(fmt)
            native = torch.ops.ingot.packed_linear(torch.eye(40), packed, 96, None, fmt.value)
            decoded = unpack_linear_weight(packed, 96, fmt).contiguous()
            assert torch.equal(native, decoded.T)
            cases.append((torch.eye(40), packed, fmt.value, decoded, None, 96, native))
    return cases


def test_the_library_built_for_avx2_matches_the_references_and_the_native_build(library, tmp_path):
    """Artifacts built for AVX2-only machines (AMD Zen 3) run the kernels' 256-bit paths, which this machine runs
    too. packed_linear (4 x 24 tiles; Tenstorrent's formats decoded 8 columns at a time) sums each row in the same
    order, so it gives the very bits of the native build; the decode attention (8-float vectors, bfloat16 widened
    8 at a time) matches the same float64 reference over either cache. bfloat16 inputs need AVX-512: refused."""
    attention = [
        (case, _reference(*case))
        for dtype in (torch.float32, torch.bfloat16)
        for case in [_attention_case(*shape, dtype) for shape in ATTENTION_SHAPES]
    ] + [(case, _reference(*case)) for case in [_long_context_case(9, 3, 64, 16, torch.bfloat16)]]
    torch.save((_linear_cases(torch.Generator().manual_seed(1)), attention), tmp_path / "cases.pt")
    result = subprocess.run(
        [sys.executable, "-c", AVX2_CHECK, str(tmp_path / "cases.pt")], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    code = subprocess.run(
        ["objdump", "-d", str(library_file("avx2"))], capture_output=True, text=True, check=True
    ).stdout
    assert "%ymm" in code and "%zmm" not in code  # 256-bit vectors only: no instruction an AVX2 CPU lacks
