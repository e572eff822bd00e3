"""A/B the decode programs of two artifacts of one model in one process, alternating step by step.

    python bench/ab_decode.py ARTIFACT_A ARTIFACT_B

Alternating keeps a shared, noisy machine's drift out of the ratio; prints median step times.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from ingot.artifacts.integrity import check_artifact
from ingot.runtime.model_runner import ModelRunner

SHAPES = [(1, 200), (8, 200), (32, 200), (32, 40)]  # (batch, context)
BLOCK = 16


def main(paths: list[Path]) -> None:
    runners = [ModelRunner(p, check_artifact(p), num_blocks=32 * (200 // BLOCK + 1) + 2) for p in paths]
    for batch, context in SHAPES:
        blocks = -(-context // BLOCK)
        tables = [list(range(1 + i * blocks, 1 + (i + 1) * blocks)) for i in range(batch)]
        args = ([5] * batch, [context - 1] * batch, tables)
        times: list[list[float]] = [[] for _ in runners]
        for runner in runners:
            runner.decode(*args)  # warm up
        for _ in range(30 if batch == 1 else 8):
            for runner, samples in zip(runners, times):
                start = time.perf_counter()
                runner.decode(*args)
                samples.append(time.perf_counter() - start)
        a, b = (statistics.median(samples) * 1000 for samples in times)
        print(f"batch {batch:2d} context {context}: A {a:6.1f} ms  B {b:6.1f} ms  B/A {b / a:.2f}", flush=True)


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:3]])
