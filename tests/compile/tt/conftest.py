"""Tiny models lowered for p150 once per session (each family's programs lower in one plugin worker)."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_OPTIONS

# TINY's buckets with a smaller decode range: prefill 16,32,64 round up to TT's 32,64; decode 1 and 2.
TT_TINY_OPTIONS = dict(TINY_OPTIONS, target="p150", max_batch=2)
# Qwen2 and Qwen3 differ from Llama in the layers, not in the program set: one prefill and one decode program.
TT_SMALL_OPTIONS = dict(TT_TINY_OPTIONS, max_batch=1, prefill_buckets=(32,))


@pytest.fixture(scope="session")
def tt_compiled(compiled):
    """tt_compiled(family, **options) -> CompileResult of that tiny family compiled for p150 (the tiny Llama with
    TT_TINY_OPTIONS, the others with TT_SMALL_OPTIONS), updated by ``options``. Every TT compile of a tiny model goes
    through the session's one ``compiled`` cache: test files asking for the same options share one compile."""

    def get(family: str, **options: object):
        return compiled(family, **{**(TT_TINY_OPTIONS if family == "llama" else TT_SMALL_OPTIONS), **options})

    return get


@pytest.fixture(scope="session")
def tt_wormhole(compiled):
    """tt_wormhole(target) -> CompileResult of the tiny Llama's two-program set compiled for n150 or n300."""
    return lambda target: compiled("llama", **{**TT_SMALL_OPTIONS, "target": target})


@pytest.fixture(scope="session")
def tt_bfp8(compiled):
    """The tiny Llama's two-program set for p150 with --weight-format bfp8."""
    return compiled("llama", **TT_SMALL_OPTIONS, weight_format="bfp8")


# YOLOv4 for p150 at the smallest input, batch sizes 1 and 2: two programs lowered in one plugin session
# (~75 s on 2 cores), shared by every test of a TT detector.
TT_YOLO_OPTIONS = dict(target="p150", input_size=320, max_batch=2)


@pytest.fixture(scope="session")
def tt_yolo(session_store):
    """CompileResult of YOLOv4 (random weights) compiled for p150."""
    from ingot.compile.detector.kind import compile_detector
    from ingot.compile.options import DetectorOptions
    from ingot.models.yolov4.source import resolve_detector

    source = resolve_detector("yolov4", None, random_weights=True)
    return compile_detector(source, DetectorOptions.parse(**TT_YOLO_OPTIONS), session_store, quiet=True)
