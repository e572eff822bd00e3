"""Tenstorrent's published performance targets for models comparable to ingot's, per device: what Tenstorrent aims
for on its own software stack (tt-metal's tt-transformers under vLLM, or tt-forge), never a measurement.

Provenance: the PyPI package ``tenstorrent`` 1.2.1 (wheel sha256 ca5616642db7414f845c60648c96bd50525c40683887f86205
11866db493d3c0), file ``tenstorrent/modelhub/release_model_spec.json`` (sha256 ddbb123a619e413539a83b2002f46bf20eee9d4d
08f91802ab6a89038766a588; schema_version 0.1.0, release_version 0.25.0), licensed Apache-2.0, Copyright 2025-2026
Tenstorrent USA, Inc. Each figure below is the ``targets.target`` entry (``ttft_ms``, ``tput_user``) of the
model's ``device_model_spec.perf_reference`` for that device: 128 input and 128 output tokens, concurrency 1 (a
detector's: one image, its ``ttft_ms`` a latency and its ``tput_user`` images a second). Only these few numbers are
taken; the JSON is not shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SOURCE = "Tenstorrent's release_model_spec.json (PyPI tenstorrent 1.2.1, release 0.25.0, Apache-2.0)"


@dataclass(frozen=True)
class PublishedTarget:
    """One model's target on one device."""

    model: str
    device: str  # n150, n300, p150
    kind: Literal["llm", "detector"]
    ttft_ms: float  # time to first token at 128 input tokens; a detector's latency for one image
    per_user: float  # tokens/s/user at concurrency 1; a detector's images/s
    max_concurrency: int  # the spec's largest batch of users
    max_context: int | None  # the spec's longest sequence (None: a detector)
    stack: str


_TT_TRANSFORMERS = "tt-metal tt-transformers (vLLM)"

TARGETS = (
    PublishedTarget("Llama-3.1-8B-Instruct", "p150", "llm", 30.0, 37.0, 32, 65536, _TT_TRANSFORMERS),
    PublishedTarget("Llama-3.1-8B-Instruct", "n150", "llm", 51.0, 21.0, 32, 65536, _TT_TRANSFORMERS),
    PublishedTarget("Llama-3.1-8B-Instruct", "n300", "llm", 40.0, 41.0, 32, 131072, _TT_TRANSFORMERS),
    PublishedTarget("Llama-3.2-1B-Instruct", "n150", "llm", 9.0, 168.0, 32, 131072, _TT_TRANSFORMERS),
    PublishedTarget("Llama-3.2-1B-Instruct", "n300", "llm", 10.0, 323.0, 32, 131072, _TT_TRANSFORMERS),
    PublishedTarget("Qwen3-8B", "n150", "llm", 51.0, 21.0, 32, 40960, _TT_TRANSFORMERS),
    PublishedTarget("Qwen3-8B", "n300", "llm", 42.0, 41.0, 32, 40960, _TT_TRANSFORMERS),
    PublishedTarget("yolox_nano", "p150", "detector", 148.0, 6.72, 1, None, "tt-forge"),
)


def published_targets(device: str, kind: str) -> list[PublishedTarget]:
    """Tenstorrent's targets on ``device`` for models of ``kind`` (llm or detector)."""
    return [t for t in TARGETS if t.device == device and t.kind == kind]
