"""Prompts prefilled together against one at a time, on one artifact, alternating in one process.

    python bench/prefill_together.py ARTIFACT [--repeats 4]

First the prefill steps alone (4 x 128, 2 x 128 and 8 x 64 tokens), then the engine on 32 random prompts of 128
tokens with 128 output tokens each, its scheduler allowed one prompt per prefill step or as many as fit.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from ingot.artifacts.integrity import check_artifact
from ingot.benchmark.offline import run_offline
from ingot.benchmark.workload import random_token_prompts
from ingot.runtime.engine import Engine
from ingot.runtime.threads import call_on_fresh_thread

BLOCK = 16


def steps(engine: Engine, repeats: int) -> None:
    runner = engine.runner
    for count, tokens in [(4, 128), (2, 128), (8, 64)]:
        per = -(-tokens // BLOCK)
        tables = [list(range(1 + i * per, 1 + (i + 1) * per)) for i in range(count)]
        prompts = [[(i * 7919 + j * 31) % 30000 for i in range(tokens)] for j in range(count)]
        ways = {
            "one at a time": lambda ps=prompts, ts=tables: [runner.prefill([p], [0], [t]) for p, t in zip(ps, ts)],
            "together": lambda ps=prompts, ts=tables: runner.prefill(ps, [0] * len(ps), ts),
        }
        times = {name: [] for name in ways}
        for _ in range(repeats + 1):  # the first round warms up
            for name, way in ways.items():
                start = time.perf_counter()
                way()
                times[name].append(time.perf_counter() - start)
        a, b = (statistics.median(t[1:]) * 1000 for t in times.values())
        print(f"prefill {count} x {tokens}: one at a time {a:.1f} ms, together {b:.1f} ms, ratio {b / a:.2f}", flush=True)


def engine_runs(engine: Engine, repeats: int) -> None:
    rates: dict[int, list[float]] = {1: [], engine.scheduler.max_prefill_batch: []}
    seed = 0
    for _ in range(repeats):
        for batch, samples in rates.items():
            engine.scheduler.max_prefill_batch = batch
            seed += 1  # new prompts each run: no prefix-cache hits
            prompts = random_token_prompts(engine.tokenizer, 32, 128, seed=seed)
            records, duration = asyncio.run(run_offline(engine, prompts, 128, 32))
            samples.append(sum(r.output_tokens for r in records) / duration)
    a, b = (statistics.median(samples) for samples in rates.values())
    print(f"engine, 32 x 128 in / 128 out: one prompt a prefill step {a:.1f} tok/s, together {b:.1f} tok/s, {b / a:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    engine = Engine(args.artifact, check_artifact(args.artifact), kv_cache_gb=2.0)
    try:
        # on a thread whose OpenMP pool ends with it: an idle second pool slows the engine's (ingot/runtime/threads.py)
        call_on_fresh_thread(lambda: steps(engine, args.repeats))
        engine_runs(engine, args.repeats)
    finally:
        engine.shutdown()


if __name__ == "__main__":
    main()
