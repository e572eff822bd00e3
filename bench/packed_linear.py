"""ingot's packed_linear kernel against oneDNN's prepacked product on one decode step's matrix products of
SmolLM2-135M (30 layers of q/k/v, o, gate/up and down with the projections of one input concatenated, as the
programs have them, then the vocabulary projection), the two alternating step by step. Over the whole model's
539 MB of weights, so they come from memory as in a real step, not from cache.

    python bench/packed_linear.py [ROWS ...]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from ingot.compile.cpu.packed_linears import pack_linear_weight
from ingot.compile.kernels import build_kernels

HIDDEN, INTERMEDIATE, KV_WIDTH, VOCAB, LAYERS = 576, 1536, 192, 49152, 30
LAYER = [(HIDDEN + 2 * KV_WIDTH, HIDDEN), (HIDDEN, HIDDEN), (2 * INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)]
SHAPES = LAYER * LAYERS + [(VOCAB, HIDDEN)]  # (out features, in features)


def main(rows: list[int]) -> None:
    build_kernels()
    torch.set_num_threads(2)
    weights = [torch.randn(n, k) for n, k in SHAPES]
    packed = [pack_linear_weight(w) for w in weights]
    onednn = [torch.ops.mkldnn._reorder_linear_weight(w, 32) for w in weights]
    for m in rows:
        inputs = {k: torch.randn(m, k) for k in (HIDDEN, INTERMEDIATE)}

        def onednn_step() -> None:
            for (n, k), w in zip(SHAPES, onednn):
                torch.ops.mkldnn._linear_pointwise(inputs[k], w, None, "none", [None], "")

        def packed_step() -> None:
            for (n, k), w in zip(SHAPES, packed):
                torch.ops.ingot.packed_linear(inputs[k], w, n, None)

        times: dict = {onednn_step: [], packed_step: []}
        for _ in range(12):
            for step, samples in times.items():
                start = time.perf_counter()
                step()
                samples.append(time.perf_counter() - start)
        a, b = (statistics.median(samples) * 1e3 for samples in times.values())
        flop = 2 * m * sum(n * k for n, k in SHAPES)
        print(f"{m:2d} rows: oneDNN {a:5.1f} ms ({flop / a / 1e6:3.0f} GFLOP/s)  "
              f"packed_linear {b:5.1f} ms ({flop / b / 1e6:3.0f} GFLOP/s)  {a / b:.2f}x", flush=True)


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [2, 8, 16, 32])
