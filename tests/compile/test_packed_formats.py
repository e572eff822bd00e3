"""Weights packed in Tenstorrent's formats for ingot's packed_linear kernel: the values they hold are the ones a
Tenstorrent device would (bit for bit), the kernel multiplies by exactly those values at any row count, and the
memory they take follows the format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ingot.artifacts.weight_format import WeightFormat
from ingot.compile.cpu.packed_linears import (
    TT_FORMAT,
    embedding_rows,
    empty_packed,
    pack_linear_weight,
    packed_shape,
    unpack_linear_weight,
    use_packed_linears,
)
from ingot.compile.kernels import build_kernels
from ingot.compile.tt.formats import quantize
from ingot.errors import CompileError

FORMATS = list(WeightFormat)
TT_FORMATS = [fmt for fmt in WeightFormat if fmt is not WeightFormat.FP32]
GOLDEN = np.load(Path(__file__).parent / "tt" / "data" / "ttnn_golden.npz")


@pytest.fixture(scope="module")
def library() -> Path:
    return build_kernels()


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32)


def _tt_values(weight: torch.Tensor, fmt: WeightFormat) -> torch.Tensor:
    """What Tenstorrent holds for an nn.Linear weight: it stores the weight transposed, [in, out]."""
    return weight if fmt is WeightFormat.FP32 else quantize(weight.T, TT_FORMAT[fmt]).T


def _wide_ranging(out_features: int, in_features: int, seed: int) -> torch.Tensor:
    """Weights whose blocks mix magnitudes 2^-30 to 2^30, exact zeros, float32 subnormals and ties."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator)
    weight *= 2.0 ** torch.randint(-30, 31, (out_features, 1), generator=generator).float()
    weight[::7, ::3] = 0.0
    weight[3::11, 1::5] = 1e-40  # subnormal: Tenstorrent stores +0
    weight[5::13, ::4] = -(1.0 + 2.0**-8)  # a tie at 7 fraction bits
    return weight


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("out_features, in_features", [(96, 40), (101, 37), (5, 3), (200, 1)])
def test_packed_weights_hold_the_values_tenstorrent_holds(fmt, out_features, in_features):
    weight = _wide_ranging(out_features, in_features, seed=out_features)
    packed = pack_linear_weight(weight, fmt)
    assert packed.shape == packed_shape(out_features, in_features, fmt)
    unpacked = unpack_linear_weight(packed, out_features, fmt)
    assert unpacked.dtype == torch.float32 and unpacked.shape == weight.shape
    assert torch.equal(_bits(unpacked), _bits(_tt_values(weight, fmt)))


@pytest.mark.parametrize("fmt", TT_FORMATS)
def test_packed_weights_hold_ttnn_own_conversions(fmt):
    """Against values ttnn itself produced (tests/compile/tt/data), not only against ingot's emulation of it."""
    cases = sorted({name.split("/")[0] for name in GOLDEN.files if "/" in name})
    for case in cases:
        data = torch.from_numpy(GOLDEN[f"{case}/input"]).reshape(-1, GOLDEN[f"{case}/input"].shape[-1])
        expected = torch.from_numpy(GOLDEN[f"{case}/{TT_FORMAT[fmt].value}"]).reshape(data.shape)
        weight = data.T  # ttnn's rows are a linear's inputs, its blocks run along the outputs
        unpacked = unpack_linear_weight(pack_linear_weight(weight, fmt), weight.shape[0], fmt)
        assert torch.equal(_bits(unpacked), _bits(expected.T)), case


@pytest.mark.parametrize("fmt", FORMATS)
def test_packed_memory_follows_the_format(fmt):
    packed = pack_linear_weight(torch.randn(480, 64), fmt)
    assert packed.nbytes == 480 * 64 * fmt.bytes_per_value
    assert empty_packed("w", [torch.empty(96, 64), torch.empty(384, 64)], fmt).nbytes == packed.nbytes


def extreme_weights(out_features: int, in_features: int) -> torch.Tensor:
    """Blocks of tiny weights (near float32's smallest normal), of huge ones, of ordinary ones, and mixed."""
    generator = torch.Generator().manual_seed(out_features)
    weight = torch.randn(out_features, in_features, generator=generator)
    weight[:16] *= 2.0**-122
    weight[16:32] *= 2.0**120
    weight[48:] *= 2.0 ** torch.randint(-120, 121, (out_features - 48, 1), generator=generator).float()
    return weight


@pytest.mark.parametrize("fmt", FORMATS)
def test_kernel_multiplies_by_exactly_the_decoded_weights(library, fmt):
    """Times the identity, a product is the weights themselves, bit for bit: decoded in registers (a row at a
    time) and from a decoded panel (all rows at once) alike."""
    weight = extreme_weights(101, 40)
    packed = pack_linear_weight(weight, fmt)
    decoded = unpack_linear_weight(packed, 101, fmt)
    identity = torch.eye(40)
    together = torch.ops.ingot.packed_linear(identity, packed, 101, None, fmt.value)
    alone = torch.cat([torch.ops.ingot.packed_linear(row[None], packed, 101, None, fmt.value) for row in identity])
    assert torch.equal(_bits(together), _bits(decoded.T))
    assert torch.equal(_bits(alone), _bits(decoded.T))
    for rows in (9, 16, 24, 25, 32):  # decode steps of many streams
        step = torch.ops.ingot.packed_linear(identity[:rows], packed, 101, None, fmt.value)
        assert torch.equal(_bits(step), _bits(decoded.T[:rows])), rows


def arbitrary_records(fmt: WeightFormat, out_features: int = 96, in_features: int = 40) -> torch.Tensor:
    """A block-format weight of random codes and exponent bytes 7 to 250: every code at every scale the format
    holds, beyond what packing real weights gives, from float32's smallest normals to near its largest (a record
    never decodes to a subnormal or infinite weight: packing flushes subnormals and scales codes to the block)."""
    generator = torch.Generator().manual_seed(in_features)
    packed = torch.randint(0, 256, packed_shape(out_features, in_features, fmt), dtype=torch.uint8, generator=generator)
    start = 48 if fmt is WeightFormat.BFP8 else 24
    packed[..., start:] = torch.randint(7, 251, packed[..., start:].shape, dtype=torch.uint8, generator=generator)
    if fmt is WeightFormat.BFP8:  # codes -127..127: -128 is not one
        packed[..., :start][packed[..., :start] == 128] = 0
    else:  # nibbles -7..7: 8 is not one
        low, high = packed[..., :start] & 15, packed[..., :start] >> 4
        packed[..., :start] = torch.where(low == 8, 0, low) | (torch.where(high == 8, 0, high) << 4)
    return packed


@pytest.mark.parametrize("fmt", [WeightFormat.BFP8, WeightFormat.BFP4])
def test_kernel_decodes_any_codes_and_exponents_exactly(library, fmt):
    """The AVX-512 bfp4 path reads its weights from a table by exponent byte: every entry must be the exact weight,
    as scalef and the AVX2 path's products compute it."""
    packed = arbitrary_records(fmt)
    decoded = unpack_linear_weight(packed, 96, fmt)
    assert decoded.abs().max() > 2.0**120 and decoded[decoded != 0].abs().min() < 2.0**-120
    identity = torch.eye(40)
    together = torch.ops.ingot.packed_linear(identity, packed, 96, None, fmt.value)
    alone = torch.cat([torch.ops.ingot.packed_linear(row[None], packed, 96, None, fmt.value) for row in identity])
    assert torch.equal(_bits(together), _bits(decoded.T))
    assert torch.equal(_bits(alone), _bits(decoded.T))


ROWS = [1, 3, 8, 33, 200]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("out_features, in_features", [(100, 72), (150, 1100)])  # one k block, and two
def test_kernel_multiplies_by_the_decoded_weights(library, fmt, out_features, in_features):
    """At decode's row counts (weights decoded in registers) and prefill's (a panel decoded once per row block)."""
    weight = _wide_ranging(out_features, in_features, seed=in_features) * 2.0**-10
    bias = torch.randn(out_features)
    packed = pack_linear_weight(weight, fmt)
    decoded = unpack_linear_weight(packed, out_features, fmt)
    atol = 1e-4 * max(1.0, in_features / 1000) * decoded.abs().max().item()
    for rows in ROWS:
        x = torch.randn(rows, in_features)
        for b in (bias, None):
            out = torch.ops.ingot.packed_linear(x, packed, out_features, b, fmt.value)
            torch.testing.assert_close(out, torch.nn.functional.linear(x, decoded, b), atol=atol, rtol=1e-5)


@pytest.mark.parametrize("fmt", TT_FORMATS)
@pytest.mark.parametrize("in_features", [96, 2500])  # within one k block of 1024, and over three
def test_kernel_gives_a_row_the_same_bits_in_any_batch(library, fmt, in_features):
    """A row decoded in registers (a decode step) and one read from a decoded panel (prefill) get the same bits."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(200, in_features, generator=generator)
    bias = torch.randn(200, generator=generator)
    x = torch.randn(300, in_features, generator=generator)
    packed = pack_linear_weight(weight, fmt)
    for b in (bias, None):
        batches = {rows: torch.ops.ingot.packed_linear(x[:rows], packed, 200, b, fmt.value) for rows in (5, 17, 300)}
        for row in (0, 4):
            alone = torch.ops.ingot.packed_linear(x[row : row + 1], packed, 200, b, fmt.value)
            for batched in batches.values():
                assert torch.equal(alone[0], batched[row])
        for row in (129, 299):
            alone = torch.ops.ingot.packed_linear(x[row : row + 1], packed, 200, b, fmt.value)
            assert torch.equal(alone[0], batches[300][row])


@pytest.mark.parametrize("fmt", FORMATS)
def test_kernel_gives_decode_steps_of_any_size_the_product_and_each_row_its_bits_alone(library, fmt):
    """A decode step has a row per stream (1 to 32 rows): at every such row count, whichever tile or group of rows
    a row falls in, it is the product with the decoded weights and the very bits it gets alone."""
    generator = torch.Generator().manual_seed(2)
    weight = _wide_ranging(150, 1100, seed=5) * 2.0**-10  # a partial last panel; two k blocks
    bias = torch.randn(150, generator=generator)
    x = torch.randn(32, 1100, generator=generator)
    packed = pack_linear_weight(weight, fmt)
    decoded = unpack_linear_weight(packed, 150, fmt)
    atol = 1e-4 * 1.1 * decoded.abs().max().item()
    for b in (bias, None):
        alone = torch.cat([torch.ops.ingot.packed_linear(row[None], packed, 150, b, fmt.value) for row in x])
        for rows in range(2, 33):
            out = torch.ops.ingot.packed_linear(x[:rows], packed, 150, b, fmt.value)
            torch.testing.assert_close(out, torch.nn.functional.linear(x[:rows], decoded, b), atol=atol, rtol=1e-5)
            assert torch.equal(_bits(out), _bits(alone[:rows])), rows


def test_kernel_refuses_a_weight_packed_in_another_format(library):
    packed = pack_linear_weight(torch.randn(48, 16), WeightFormat.BFP8)
    with pytest.raises(RuntimeError, match="not packed in format bfp4"):
        torch.ops.ingot.packed_linear(torch.randn(2, 16), packed, 48, None, "bfp4")
    with pytest.raises(RuntimeError, match="unknown weight format"):
        torch.ops.ingot.packed_linear(torch.randn(2, 16), packed, 48, None, "int8")


@pytest.mark.parametrize("fmt", FORMATS)
def test_embedding_rows_are_the_decoded_rows(library, fmt):
    weight = _wide_ranging(150, 20, seed=3)
    packed = pack_linear_weight(weight, fmt)
    ids = torch.tensor([[0, 15, 16, 47], [48, 100, 149, 8]])
    rows = embedding_rows(packed, ids, fmt.value)
    assert torch.equal(_bits(rows), _bits(unpack_linear_weight(packed, 150, fmt)[ids]))


def test_embedding_rows_refuse_an_id_beyond_the_panels(library):
    packed = pack_linear_weight(torch.randn(50, 8), WeightFormat.BFP8)  # two panels: columns 0 to 95
    with pytest.raises(RuntimeError, match="out of range"):
        embedding_rows(packed, torch.tensor([3, 96]), "bfp8")
    with pytest.raises(RuntimeError, match="out of range"):
        embedding_rows(packed, torch.tensor([-1]), "bfp8")


class TiedModel(torch.nn.Module):
    """An embedding tied to the LM head, and an MLP's gate and up projections of one input."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(100, 24)
        self.gate = torch.nn.Linear(24, 32, bias=False)
        self.up = torch.nn.Linear(24, 32, bias=True)
        self.head = torch.nn.Linear(24, 100, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        return self.head(h + (self.gate(h) * self.up(h))[..., :24])


IDS = torch.tensor([[5, 99, 0, 48, 17]])


def _exported(model: torch.nn.Module) -> torch.fx.GraphModule:
    return torch.export.export(model, (IDS,)).module()


@pytest.mark.parametrize("fmt", TT_FORMATS)
def test_pass_stores_each_linear_in_its_format_and_the_tied_embedding_reads_it(library, fmt):
    torch.manual_seed(0)
    model = TiedModel().eval()
    module = _exported(model)
    head = next(
        node.args[1].target
        for node in module.graph.find_nodes(op="call_function", target=torch.ops.aten.linear.default)
        if node.args[1].target in ("head.weight", "embed.weight")
    )
    formats = {head: fmt, "gate.weight": WeightFormat.BFP4, "up.weight": WeightFormat.BFP4}
    groups = use_packed_linears(module, formats=formats)
    assert {group.format for group in groups.values()} == {fmt, WeightFormat.BFP4}
    assert getattr(module, f"packed_{head.replace('.', '_')}").dtype == pack_linear_weight(torch.ones(1, 1), fmt).dtype

    def tt(linear: torch.nn.Linear, as_fmt: WeightFormat) -> torch.Tensor:
        return unpack_linear_weight(pack_linear_weight(linear.weight, as_fmt), linear.out_features, as_fmt)

    head_weight, gate, up = tt(model.head, fmt), tt(model.gate, WeightFormat.BFP4), tt(model.up, WeightFormat.BFP4)
    with torch.no_grad():
        h = head_weight[IDS]
        mixed = torch.nn.functional.linear(h, gate) * torch.nn.functional.linear(h, up, model.up.bias)
        expected = torch.nn.functional.linear(h + mixed[..., :24], head_weight)
        torch.testing.assert_close(module(IDS), expected, atol=1e-5, rtol=1e-5)


def test_linears_packed_together_need_one_format(library):
    module = _exported(TiedModel().eval())
    with pytest.raises(CompileError, match="one weight format"):
        use_packed_linears(module, formats={"gate.weight": WeightFormat.BFP8, "up.weight": WeightFormat.BF16})
