"""A server runs for weeks: a thousand requests must leave no trace in the KV cache or in the process's memory."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ingot.artifacts.integrity import check_artifact
from ingot.runtime.engine import Engine
from ingot.runtime.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def engine(compiled):
    path = compiled("llama").path
    engine = Engine(path, check_artifact(path), num_blocks=64)
    yield engine
    engine.shutdown()


def _rss() -> int:
    """Resident memory now (not the peak that getrusage reports)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _run(engine: Engine, count: int, rng: random.Random) -> None:
    """Batches of mixed requests: random prompts and lengths, sampled and greedy, some stopped early."""
    for _ in range(count // 8):
        prompts = [[rng.randrange(3, 384) for _ in range(rng.randrange(1, 40))] for _ in range(8)]
        params = [
            SamplingParams(temperature=rng.choice([0, 0.8]), max_tokens=rng.randrange(1, 12), seed=rng.randrange(99), stop=["e"])
            for _ in prompts
        ]
        engine.generate(prompts, params)


def test_a_thousand_requests_return_the_kv_cache_and_memory_to_baseline(engine):
    """The math libraries keep some state per step shape (oneDNN's primitives, MKL's and the allocator's pools):
    bounded by the shapes a model's steps take, and prompts arriving together make many (a prefill step of 1-4
    prompts of 16-40 tokens each). So the warm-up runs the same mix long enough to meet them, then memory must
    stay flat."""
    rng = random.Random(0)
    _run(engine, 1600, rng)  # warm up: step shapes, tokenizer caches, the prefix-cache table at its bound
    baseline = _rss()
    _run(engine, 1000, rng)
    stats = engine.stats()
    assert stats.num_running == stats.num_waiting == 0 and stats.kv_blocks_used == 0
    assert not engine.requests
    growth = _rss() - baseline
    assert growth < 16 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB over 1,000 requests"
