"""Golden vectors for ingot's TT data-format emulation, made by real `ttnn` conversion (run once, commit the output).

Every case is a float32 array; each is converted by ttnn to bfloat16, bfloat8_b and bfloat4_b in TILE layout
(`ttnn.Tensor(array, dtype, layout=ttnn.TILE_LAYOUT)`, which tilizes, pads to whole 32x32 tiles and packs) and
read back to float32. tests/compile/tt/test_formats.py checks ingot/compile/tt/formats.py against them bit for
bit, in CI, without ttnn.

ttnn has wheels only for Python 3.10 and 3.12 and needs no device for host tensors when
TT_METAL_MOCK_CLUSTER_DESC_PATH names a cluster descriptor (tools/blackhole_p150_cluster_desc.yaml). To regenerate:

    python3.12 -m venv /tmp/ttnn-venv
    /tmp/ttnn-venv/bin/pip install ttnn==0.81.1 numpy
    TT_METAL_MOCK_CLUSTER_DESC_PATH=tools/blackhole_p150_cluster_desc.yaml \\
        /tmp/ttnn-venv/bin/python tools/make_ttnn_golden.py tests/compile/tt/data/ttnn_golden.npz

Only tensor construction and conversion run on the host: ttnn ops need a device (and crash without one).
"""

from __future__ import annotations

import sys
from importlib.metadata import version

import numpy as np

SEED = 20261126


def cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    f32 = np.float32

    def wide(shape, low, high):
        magnitude = 10.0 ** rng.uniform(low, high, size=shape)
        return (rng.choice([-1.0, 1.0], size=shape) * magnitude).astype(f32)

    def random_bits(shape, exponent_low, exponent_high):
        """Uniformly random sign and mantissa bits, exponents in a range: hits every rounding case, ties included."""
        sign = rng.integers(0, 2, size=shape, dtype=np.uint32) << 31
        exponent = rng.integers(exponent_low, exponent_high + 1, size=shape, dtype=np.uint32) << 23
        mantissa = rng.integers(0, 1 << 23, size=shape, dtype=np.uint32)
        return (sign | exponent | mantissa).view(f32)

    def ties(shape):
        """Values whose mantissa lands exactly halfway for bfloat16, bfloat8_b or bfloat4_b (block max 2^0 fixed)."""
        out = np.empty(shape, f32)
        flat = out.reshape(-1)
        for i in range(flat.size):
            if i % 16 == 0:
                flat[i] = 1.0  # the block's shared exponent is 127 for every block
                continue
            kept = rng.choice([2, 4, 8, 16])  # mantissa bits kept, hidden bit included
            scale = 2.0 ** -int(rng.integers(0, 4))
            numerator = int(rng.integers(1 << (kept - 1), 1 << kept)) * 2 + 1  # exactly halfway between two steps
            flat[i] = rng.choice([-1.0, 1.0]) * numerator / 2.0**kept * scale
        return out

    def saturating(shape):
        """Block maxima just under a power of two: rounding up would need a larger exponent; ttnn saturates."""
        base = rng.uniform(0.0, 1.0, size=shape).astype(f32)
        base[..., ::16] = rng.choice([1.999, 1.9999999, 1.97, 1.94, 3.99, 0.999999], size=base[..., ::16].shape)
        return base * rng.choice([-1.0, 1.0], size=shape).astype(f32)

    sparse = np.zeros((32, 64), f32)
    sparse.reshape(-1)[rng.choice(sparse.size, 200, replace=False)] = rng.standard_normal(200)
    signed_zeros = np.zeros((32, 32), f32)
    signed_zeros[::2] = -0.0
    signed_zeros[5, 3] = 1.5
    signed_zeros[7, 17] = -0.25

    return {
        "normal": rng.standard_normal((64, 96)).astype(f32),
        "normal_scaled": (rng.standard_normal((32, 128)) * 0.02).astype(f32),  # weight-like
        "negative": -np.abs(rng.standard_normal((32, 64))).astype(f32),
        "wide_range": wide((64, 64), -20, 20),
        "wide_range_extreme": wide((32, 64), -37, 38),
        "random_bits": random_bits((64, 64), 100, 150),
        "ties": ties((32, 64)),
        "saturating": saturating((32, 64)),
        "zeros": np.zeros((32, 32), f32),
        "sparse": sparse,
        "signed_zeros": signed_zeros,
        "tiny": wide((32, 64), -45, -30),  # float32 subnormals and the underflow edge of the shared exponent
        "tiny_bits": random_bits((32, 32), 0, 8),
        # blocks whose shared exponent is 1..4 or 1..2: read back, small codes fall below float32's normal range
        "underflow_bits": random_bits((32, 32), 1, 4),
        "underflow_bits_narrow": random_bits((32, 32), 1, 2),
        "outlier_rows": np.where(
            rng.random((32, 64)) < 0.03, rng.standard_normal((32, 64)) * 1000, rng.standard_normal((32, 64))
        ).astype(f32),
        # shapes that are not whole tiles: ttnn pads them to 32x32 tiles
        "shape_3x5": rng.standard_normal((3, 5)).astype(f32),
        "shape_33x47": rng.standard_normal((33, 47)).astype(f32),
        "shape_1x100": wide((1, 100), -3, 3),
        "shape_2x3x40": rng.standard_normal((2, 3, 40)).astype(f32),
        "shape_70": rng.standard_normal((70,)).astype(f32),
        "shape_5x1x20x18": wide((5, 1, 20, 18), -2, 2),
    }


def main(out_path: str) -> None:
    import ttnn

    dtypes = {"bfloat16": ttnn.bfloat16, "bfloat8_b": ttnn.bfloat8_b, "bfloat4_b": ttnn.bfloat4_b}
    arrays: dict[str, np.ndarray] = {"ttnn_version": np.array(version("ttnn"))}
    for name, data in cases().items():
        arrays[f"{name}/input"] = data
        for dtype_name, dtype in dtypes.items():
            tensor = ttnn.Tensor(data, dtype, layout=ttnn.TILE_LAYOUT)
            assert tuple(tensor.shape) == data.shape, (name, tuple(tensor.shape), data.shape)
            if dtype_name == "bfloat16":
                # numpy has no bfloat16: to_numpy gives objects; to_list gives the exact values as Python floats
                back = np.array(tensor.to_list(), dtype=np.float32).reshape(data.shape)
            else:
                back = np.asarray(tensor.to_numpy(), dtype=np.float32).reshape(data.shape)
            arrays[f"{name}/{dtype_name}"] = back
    np.savez_compressed(out_path, **arrays)
    print(f"{out_path}: {len(arrays)} arrays from ttnn {version('ttnn')}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/compile/tt/data/ttnn_golden.npz")
