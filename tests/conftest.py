"""Shared fixtures. Compiling is the slow part of the suite, so each tiny family is compiled once per session."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingot.artifacts.store import ArtifactStore
from ingot.compile.options import DetectorOptions
from ingot.compile.options import CompileOptions
from tests.tiny_models import make_tiny_model

# Small shapes keep compiles quick; 256 tokens of context is what verification needs.
TINY_OPTIONS = dict(max_batch=4, max_context=256, prefill_buckets=(16, 32, 64))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session", autouse=True)
def inductor_cache(tmp_path_factory: pytest.TempPathFactory):
    """One inductor cache for the session's compiles, the CLI's subprocesses included (they inherit it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.mktemp("inductor")))
        yield


@pytest.fixture(scope="session")
def tiny_model(models_dir: Path):
    """tiny_model(family, seed=0) -> path of a tiny random HF model directory (made once per session)."""

    def make(family: str, seed: int = 0) -> Path:
        path = models_dir / f"{family}-{seed}"
        if not path.exists():
            make_tiny_model(family, path, seed=seed)
        return path

    return make


@pytest.fixture(scope="session")
def session_store(tmp_path_factory: pytest.TempPathFactory) -> ArtifactStore:
    return ArtifactStore(tmp_path_factory.mktemp("cache"))


class TinyCompiles:
    """compiled(family, **options) -> CompileResult of that tiny family with TINY_OPTIONS updated by ``options`` (e.g.
    ``weight_format="bfp8"``), compiled once per session; ``progress[family]`` is what its compile with TINY_OPTIONS
    alone printed on stderr (its stages and their steps)."""

    def __init__(self, tiny_model, store: ArtifactStore) -> None:
        self.tiny_model = tiny_model
        self.store = store
        self.results = {}
        self.progress: dict[str, str] = {}

    def __call__(self, family: str, **options: object):
        from ingot.compile.llm.kind import compile_model

        merged = {**TINY_OPTIONS, **options}  # ``options`` may override TINY_OPTIONS (a TT target's max_batch)
        key = (family, *sorted(merged.items()))
        if key not in self.results:
            printed = io.StringIO()
            with contextlib.redirect_stderr(printed):  # the progress console writes to sys.stderr as it is now
                compile_options = CompileOptions.parse(**merged)
                self.results[key] = compile_model(str(self.tiny_model(family)), compile_options, self.store)
            if not options:
                self.progress[family] = printed.getvalue()
        return self.results[key]


@pytest.fixture(scope="session")
def compiled(tiny_model, session_store: ArtifactStore) -> TinyCompiles:
    return TinyCompiles(tiny_model, session_store)


def run_cli(*args: str, cache_dir: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed `ingot` entry point as a user would."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["INGOT_CACHE_DIR"] = str(cache_dir)
    return subprocess.run(
        [sys.executable, "-m", "ingot.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def tiny_cli_options() -> list[str]:
    return ["--max-batch", "4", "--max-context", "256", "--prefill-buckets", "16,32,64"]


# YOLOv4 compiles take 1-2 minutes each on 2 cores: one per input size per session.
YOLO_MAX_BATCH = 2


def yolo_options(input_size: int) -> DetectorOptions:
    """320 has both programs (one image, and 2..YOLO_MAX_BATCH) and emits ONNX; other sizes build the one-image
    program only, which is what their tests need."""
    if input_size == 320:
        return DetectorOptions(input_size=320, max_batch=YOLO_MAX_BATCH, emit=("onnx",))
    return DetectorOptions(input_size=input_size, max_batch=1)


@pytest.fixture(scope="session")
def compiled_yolo(session_store: ArtifactStore):
    """compiled_yolo(input_size) -> CompileResult of YOLOv4 with random weights and ``yolo_options(input_size)``."""
    from ingot.compile.detector.kind import compile_detector
    from ingot.models.yolov4.source import resolve_detector

    results = {}

    def get(input_size: int):
        if input_size not in results:
            options = yolo_options(input_size)
            source = resolve_detector("yolov4", None, random_weights=True)
            results[input_size] = compile_detector(source, options, session_store, quiet=True)
        return results[input_size]

    return get


@pytest.fixture(scope="session")
def detector(compiled_yolo):
    """A running Detector over the 320 YOLOv4 artifact, shared by the runtime and server tests."""
    from ingot.artifacts.integrity import check_artifact
    from ingot.runtime.vision.detector import Detector

    path = compiled_yolo(320).path
    detector = Detector(path, check_artifact(path))
    yield detector
    detector.shutdown()
