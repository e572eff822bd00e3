"""ingot's paged decode attention on its own: one step's calls over every layer of a model's KV cache, at a few
batch sizes and contexts, on 1 and 2 threads. Each layer has its own slice of the cache, so a step reads it from
memory as a real one does. To compare two checkouts, run it from each in turn (the library is built from the
sources it runs with). ``--scattered`` puts the blocks in random order, as a busy engine's block tables are (its
sequences take blocks in turn as they grow); by default a sequence's blocks follow one another.

    python bench/decode_attention.py [--model smollm2-135m|llama-3.2-1b] [--cache-dtype bf16|fp32] [--scattered]
    PYTHONPATH=OTHER_CHECKOUT XDG_CACHE_HOME=/tmp/other python bench/decode_attention.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ingot.compile.kernels import build_kernels

BLOCK_SIZE = 16
CASES = [(1, 200), (1, 1000), (2, 200), (8, 200), (32, 192)]  # (sequences, context tokens)
MODELS = {  # layers, query heads, KV heads, head dim
    "smollm2-135m": (30, 9, 3, 64),
    "llama-3.2-1b": (16, 32, 8, 64),
}


def step_ms(layers: int, heads: int, kv_heads: int, head_dim: int, batch: int, context: int,
            dtype: torch.dtype, threads: int, repeats: int, scattered: bool = False) -> float:  # fmt: skip
    """Median time of one decode step's attention over every layer."""
    blocks = -(-context // BLOCK_SIZE)
    cache = torch.randn(layers, 2, batch * blocks + 1, BLOCK_SIZE, kv_heads, head_dim).to(dtype)
    count = batch * blocks
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0)) if scattered else torch.arange(count)
    tables = (1 + order).reshape(batch, blocks)  # block 0 stays unused, as the pad block
    lengths = torch.full((batch,), context)
    query = torch.randn(batch, heads, head_dim)
    torch.set_num_threads(threads)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for layer in range(layers):
            torch.ops.ingot.paged_decode_attention(query, cache, layer, tables, lengths, head_dim**-0.5)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2-135m")
    parser.add_argument("--cache-dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--scattered", action="store_true", help="blocks in random order")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    build_kernels()
    dtype = torch.bfloat16 if args.cache_dtype == "bf16" else torch.float32
    layers, heads, kv_heads, head_dim = MODELS[args.model]
    order = "scattered" if args.scattered else "contiguous"
    print(
        f"{args.model}: {layers} layers, {heads} heads / {kv_heads} KV heads of {head_dim}, {args.cache_dtype} cache, "
        f"{order} blocks"
    )
    for batch, context in CASES:
        one, two = (
            step_ms(*MODELS[args.model], batch, context, dtype, threads, args.repeats, args.scattered)
            for threads in (1, 2)
        )
        label = f"{batch:2d} sequences x {context:4d} tokens"
        print(f"  {label}: 1 thread {one:7.3f} ms  2 threads {two:7.3f} ms", flush=True)


if __name__ == "__main__":
    main()
