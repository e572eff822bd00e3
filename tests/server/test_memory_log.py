"""`ingot serve` logs its memory once warm: what the process holds beside what it serves."""

from __future__ import annotations

import logging
import re

import psutil

from ingot.runtime.kv_sizing import kv_block_bytes


def test_the_server_logs_its_rss_after_warm_up_beside_the_weights_and_kv_cache(serve, engine, caplog):
    caplog.set_level(logging.INFO, logger="ingot.server")
    serve()  # a server of its own, started (and warmed up) inside the test
    lines = [r.getMessage() for r in caplog.records if "after warm-up" in r.getMessage()]
    assert len(lines) == 1, lines
    found = re.fullmatch(r"RSS (\d+(?:\.\d+)?) (MB|GB) after warm-up \(weights (\d+) MB, KV cache (\d+) MB\)", lines[0])
    assert found, lines[0]
    manifest = engine.manifest
    assert int(found.group(3)) == round(manifest.files[manifest.weights.file].size / 1e6)
    assert int(found.group(4)) == round(256 * kv_block_bytes(manifest.kv_cache) / 1e6)  # the engine's 256 blocks
    logged = float(found.group(1)) * (1e6 if found.group(2) == "MB" else 1e9)
    assert 0.8 < logged / psutil.Process().memory_info().rss < 1.25  # this process's RSS, not an estimate
