"""Which thread computes: each model's own, and no other.

libgomp gives every thread that opens an OpenMP parallel region a pool of worker threads, kept for the
thread's lifetime. Once there are more pool threads than cores, libgomp cuts its spin-wait short, and every
one of a program's hundreds of kernels then waits for its workers to wake from a futex: on 2 cores that made
a SmolLM2 decode step 10% slower and a 128-token prefill 25% slower. So a model's thread is the only one that
runs parallel tensor code, and loading a model (which fills tensors in parallel) happens on a short-lived
thread whose pool ends with it, not on the caller's thread, which lives on idle.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def call_on_fresh_thread(function: Callable[[], T]) -> T:
    """``function()`` on a thread that ends when it returns; its result, or its exception raised here."""
    with ThreadPoolExecutor(1, thread_name_prefix="ingot-load") as pool:
        return pool.submit(function).result()
