"""What serving an artifact should hold in memory (`ingot inspect`), and what it holds (`ingot serve`'s log).

Issue 26's target for a language model after warm-up: RSS <= weight bytes + KV-cache bytes + 0.6 GB of runtime
(the interpreter, torch, the tokenizer, the programs' code and their activations).
"""

from __future__ import annotations

import psutil

from ingot.artifacts.manifest import Manifest
from ingot.runtime.kv_sizing import kv_block_bytes, kv_cache_blocks

RUNTIME_OVERHEAD_BYTES = 600_000_000


def weight_bytes(manifest: Manifest) -> int:
    """The artifact's weights file: the one copy of the weights every program reads."""
    return manifest.files[manifest.weights.file].size


def kv_cache_bytes(manifest: Manifest, kv_cache_gb: float | None = None) -> int:
    """The KV cache `ingot serve --kv-cache-gb` allocates (whole blocks; default 1 GiB)."""
    blocks = kv_cache_blocks(manifest.kv_cache, manifest.buckets.max_context, kv_cache_gb)
    return blocks * kv_block_bytes(manifest.kv_cache)


def expected_serving_bytes(manifest: Manifest, kv_cache_gb: float | None = None) -> int:
    """A language model's resident memory after warm-up: weights + KV cache + runtime."""
    return weight_bytes(manifest) + kv_cache_bytes(manifest, kv_cache_gb) + RUNTIME_OVERHEAD_BYTES


def resident_bytes() -> int:
    """This process's resident set (RSS)."""
    return psutil.Process().memory_info().rss


def format_bytes(count: int) -> str:
    """Decimal units, as the issue's targets: 538 MB, 4.94 GB."""
    return f"{count / 1e6:.0f} MB" if count < 1e9 else f"{count / 1e9:.2f} GB"
