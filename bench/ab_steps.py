"""A/B the programs of two artifacts of one model in one process, alternating step by step: prefill chunks and
decode steps at a few sizes.

    python bench/ab_steps.py ARTIFACT_A ARTIFACT_B

Alternating keeps a shared, noisy machine's drift out of the ratio; prints median step times.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ingot.artifacts.integrity import check_artifact
from ingot.runtime.model_runner import ModelRunner
from ingot.runtime.threads import call_on_fresh_thread

PREFILL = [128, 512]  # tokens of one chunk, from position 0
DECODE = [(1, 200), (8, 200), (32, 200), (32, 40)]  # (batch, context)
BLOCK = 16


def alternate(label: str, steps: list[Callable[[], object]], repeats: int) -> None:
    for step in steps:
        step()  # warm up
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for step, samples in zip(steps, times):
            start = time.perf_counter()
            step()
            samples.append(time.perf_counter() - start)
    a, b = (statistics.median(samples) * 1000 for samples in times)
    print(f"{label}: A {a:6.1f} ms  B {b:6.1f} ms  B/A {b / a:.2f}", flush=True)


def main(paths: list[Path]) -> None:
    blocks = 32 * (max(200, *PREFILL) // BLOCK + 1) + 2
    # Loaded off this thread, so that only the measuring thread keeps an OpenMP pool (see ingot/runtime/threads.py).
    runners = [call_on_fresh_thread(lambda p=p: ModelRunner(p, check_artifact(p), num_blocks=blocks)) for p in paths]
    for tokens in PREFILL:
        table = list(range(1, 1 + -(-tokens // BLOCK)))
        ids = [(i * 7919) % 30000 for i in range(tokens)]
        alternate(f"prefill {tokens:3d} tokens   ", [lambda r=r: r.prefill([ids], [0], [table]) for r in runners], 8)
    for batch, context in DECODE:
        count = -(-context // BLOCK)
        tables = [list(range(1 + i * count, 1 + (i + 1) * count)) for i in range(batch)]
        args = ([5] * batch, [context - 1] * batch, tables)
        steps = [lambda r=r: r.decode(*args) for r in runners]
        alternate(f"decode batch {batch:2d} context {context}", steps, 30 if batch == 1 else 8)


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:3]])
