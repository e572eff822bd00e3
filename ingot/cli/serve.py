"""`ingot serve`: resolve (or compile) every model, load it, and serve them all over an OpenAI-compatible API."""

from __future__ import annotations

import argparse
from pathlib import Path

from ingot.artifacts.store import ArtifactStore
from ingot.cli.arguments import add_command, positive_float
from ingot.cli.locate import newest_detector_artifact, open_store
from ingot.errors import IngotError


def add_parsers(commands: argparse._SubParsersAction, cache_dir: argparse.ArgumentParser) -> None:
    from ingot.server import settings as defaults

    sub = add_command(commands, "serve", cmd_serve, "serve models over an OpenAI-compatible HTTP API", [cache_dir])
    sub.add_argument(
        "models", nargs="*", metavar="MODEL",
        help="artifact key or path, a model to compile (default smollm2-135m), or yolov4 (its newest artifact)",
    )
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sub.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    sub.add_argument("--api-key", help="require this bearer token on every request but /health, /metrics and /version")
    sub.add_argument(
        "--max-queue", type=int, default=defaults.DEFAULT_MAX_QUEUE, help="requests in flight per model, then 429"
    )
    sub.add_argument(
        "--max-request-bytes", type=int, default=defaults.DEFAULT_MAX_REQUEST_BYTES, help="largest request body"
    )
    sub.add_argument("--kv-cache-gb", type=positive_float, help="KV-cache memory per model in GiB (default 1)")
    sub.add_argument(
        "--max-num-batched-tokens", type=int,
        help="tokens one engine step computes at most (a prefill chunk, a decode batch); default: the largest bucket",
    )
    sub.add_argument("--no-compile", action="store_true", help="serve only models already compiled; never compile")
    sub.add_argument(
        "--shutdown-timeout", type=float, default=defaults.DEFAULT_SHUTDOWN_TIMEOUT,
        help="seconds in-flight requests get to finish after SIGTERM",
    )
    sub.add_argument("--log-prompts", action="store_true", help="include prompt text in the access log")
    sub.add_argument(
        "--max-image-pixels", type=int, default=defaults.DEFAULT_MAX_IMAGE_PIXELS,
        help="larger images sent to /v1/detections get 413 (default: Pillow's decompression-bomb limit)",
    )


def cmd_serve(args: argparse.Namespace) -> None:
    """Resolve (or compile) every model, load its engine, and serve them all under their model names."""
    import logging

    from ingot.artifacts.integrity import check_artifact
    from ingot.artifacts.manifest import Manifest
    from ingot.errors import OptionError
    from ingot.runtime.engine import Engine
    from ingot.runtime.servable import unservable_reason
    from ingot.runtime.vision.detector import Detector
    from ingot.server.run import serve
    from ingot.server.settings import ServerSettings

    settings = ServerSettings(  # checked before any model loads
        api_key=args.api_key,
        max_queue=args.max_queue,
        max_request_bytes=args.max_request_bytes,
        log_prompts=args.log_prompts,
        shutdown_timeout=args.shutdown_timeout,
        max_image_pixels=args.max_image_pixels,
    )
    store = open_store(args)
    artifacts: dict[str, tuple[Path, Manifest]] = {}
    for model in args.models or ["smollm2-135m"]:
        path = _artifact_path(store, model, args.no_compile)
        manifest = check_artifact(path)
        refusal = unservable_reason(manifest)
        if refusal:
            raise IngotError(refusal)
        if manifest.model.name in artifacts:
            raise OptionError(f"two models are named {manifest.model.name}; served models need distinct names")
        artifacts[manifest.model.name] = (path, manifest)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engines: dict[str, Engine] = {}
    detectors: dict[str, Detector] = {}
    try:
        for name, (path, manifest) in artifacts.items():
            if manifest.kind == "detector":
                detectors[name] = Detector(path, manifest)
            else:
                engines[name] = Engine(
                    path, manifest, kv_cache_gb=args.kv_cache_gb, max_num_batched_tokens=args.max_num_batched_tokens
                )
    except BaseException:
        for runner in [*engines.values(), *detectors.values()]:
            runner.shutdown()
        raise
    serve(engines, settings, args.host, args.port, detectors)


def _artifact_path(store: ArtifactStore, model: str, no_compile: bool) -> Path:
    """An artifact key, prefix or path; else the model's default-options artifact, compiled on a miss
    (a detector's newest artifact: compiling one needs its weights)."""
    from ingot.compile.options import CompileOptions
    from ingot.compile.pipeline import cache_key, compile_model
    from ingot.errors import ArtifactError
    from ingot.models.source import BUILTIN_MODELS, resolve_source
    from ingot.models.yolov4.source import is_detector

    try:
        return store.resolve(model)
    except ArtifactError:
        if is_detector(model):
            return newest_detector_artifact(store, model)
        if model not in BUILTIN_MODELS and not Path(model).expanduser().exists():
            raise
    if not no_compile:
        return compile_model(model, CompileOptions(), store).path
    key = cache_key(resolve_source(model).digests(), CompileOptions())
    if not store.has(key):
        raise IngotError(f"{model}: not compiled (no artifact {key}) and --no-compile is set")
    return store.path(key)
