"""Offline benchmark: drive an Engine directly, `concurrency` requests in flight."""

from __future__ import annotations

import asyncio
import time

from ingot.benchmark.report import RequestRecord
from ingot.runtime.engine import Engine
from ingot.runtime.sampling_params import SamplingParams


async def run_offline(
    engine: Engine, prompts: list[list[int]], output_len: int, concurrency: int
) -> tuple[list[RequestRecord], float]:
    params = SamplingParams(temperature=0, max_tokens=output_len, ignore_eos=True)
    limit = asyncio.Semaphore(concurrency)

    async def one(prompt: list[int]) -> RequestRecord:
        async with limit:
            record = RequestRecord(prompt_tokens=len(prompt))
            start = last = time.perf_counter()
            async for output in engine.stream(prompt, params):
                now = time.perf_counter()
                if output.token_ids:
                    if record.output_tokens == 0:
                        record.ttft = now - start
                    else:
                        record.itl.append(now - last)
                    record.output_tokens += len(output.token_ids)
                    last = now
            record.e2el = time.perf_counter() - start
            return record

    start = time.perf_counter()
    records = await asyncio.gather(*(one(p) for p in prompts))
    return list(records), time.perf_counter() - start
