"""`ingot serve`: check the options, take the port, resolve (or compile) and load every model, then serve them."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ingot.cli.arguments import (
    add_command,
    finite_float,
    non_negative_float,
    non_negative_int,
    port_number,
    positive_float,
    positive_int,
)
from ingot.cli.locate import OCI_PREFIX, compile_options, open_store, serving_artifact
from ingot.cli.registry import registry_parent
from ingot.errors import IngotError, OptionError
from ingot.server import settings as defaults
from ingot.server.settings import ServerSettings

API_KEY_ENV = "INGOT_API_KEY"


def add_parsers(commands: argparse._SubParsersAction, cache_dir: argparse.ArgumentParser) -> None:
    sub = add_command(
        commands, "serve", cmd_serve, "serve models over an OpenAI-compatible HTTP API", [cache_dir, registry_parent()]
    )
    sub.add_argument(
        "models", nargs="*", metavar="MODEL",
        help="artifact key or path, a model to compile (default smollm2-135m), yolov4 (its newest artifact), or "
        f"{OCI_PREFIX}REGISTRY/REPOSITORY:TAG (pulled on a cache miss); a built-in name means the built-in model "
        "even beside a same-named directory (write ./NAME for that)",
    )
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sub.add_argument("--port", type=port_number, default=8000, help="port to listen on (default 8000)")
    key = sub.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key",
        help=f"require this bearer token on every request but /health, /metrics, /version and the playground page "
        f"(default ${API_KEY_ENV})",
    )
    key.add_argument("--api-key-file", help="as --api-key, the key being this file's first line")
    sub.add_argument(
        "--max-queue", type=positive_int, default=defaults.DEFAULT_MAX_QUEUE,
        help="requests in flight per model, then 429",
    )
    sub.add_argument(
        "--max-request-bytes", type=positive_int, default=defaults.DEFAULT_MAX_REQUEST_BYTES,
        help="largest request body",
    )
    sub.add_argument("--kv-cache-gb", type=positive_float, help="KV-cache memory per model in GiB (default 1)")
    sub.add_argument(
        "--max-num-batched-tokens", type=positive_int,
        help="tokens one engine step computes at most (a prefill chunk, a decode batch); default: the largest bucket",
    )
    sub.add_argument("--no-compile", action="store_true", help="serve only models already compiled; never compile")
    sub.add_argument(
        "--weight-format",
        help="a MODEL named as a model (not an artifact) means its artifact with these weights, compiled on a miss: "
        "fp32 (default), bf16, bfp8, bfp4, accuracy or performance (see ingot compile --help)",
    )
    sub.add_argument(
        "--activation-dtype",
        help="with --weight-format: the linears' inputs in fp32 (default) or bf16 (AVX512-BF16; see ingot compile "
        "--help)",
    )
    sub.add_argument(
        "--served-model-name", action="append", metavar="NAME",
        help="the name clients use for a MODEL instead of its model's name; once per MODEL, in order (e.g. to serve "
        "two artifacts of one model together)",
    )
    sub.add_argument(
        "--shutdown-timeout", type=finite_float, default=defaults.DEFAULT_SHUTDOWN_TIMEOUT,
        help="seconds in-flight requests get to finish after SIGTERM",
    )
    sub.add_argument(
        "--no-playground", dest="playground", action="store_false",
        help="do not serve the playground page at / and /playground",
    )
    sub.add_argument("--log-prompts", action="store_true", help="include prompt text in the access log")
    sub.add_argument(
        "--max-image-pixels", type=positive_int,
        help="larger images sent to /v1/detections get 413 (default: a cap from each detector's input size)",
    )
    limits = sub.add_argument_group("per-request limits (a request over one gets 400)")
    limits.add_argument(
        "--max-stop-sequences", type=positive_int, default=defaults.DEFAULT_MAX_STOP_SEQUENCES,
        help=f"stop strings per request (default {defaults.DEFAULT_MAX_STOP_SEQUENCES}, OpenAI's)",
    )
    limits.add_argument(
        "--max-logit-bias", type=positive_int, default=defaults.DEFAULT_MAX_LOGIT_BIAS,
        help=f"logit_bias entries per request (default {defaults.DEFAULT_MAX_LOGIT_BIAS}, OpenAI's)",
    )
    limits.add_argument(
        "--max-tools", type=positive_int, default=defaults.DEFAULT_MAX_TOOLS,
        help=f"tools per chat request (default {defaults.DEFAULT_MAX_TOOLS}, OpenAI's)",
    )
    sub.add_argument(
        "--tool-call-parser", choices=defaults.TOOL_CALL_PARSERS,
        help='how tool_choice "auto" reads calls from the model\'s text (default: from the chat template, when it '
        "writes calls as Qwen's <tool_call> or Llama 3's JSON)",
    )
    replicas = sub.add_argument_group(
        "replicas on Ray Serve (pip install 'ingot[ray]'; on the cluster at $RAY_ADDRESS, else a local one)"
    )
    replicas.add_argument(
        "--replicas", type=positive_int,
        help="serve the model from this many engine replicas behind Ray Serve's proxy (the initial count when "
        "autoscaling)",
    )
    replicas.add_argument("--min-replicas", type=non_negative_int, help="autoscale from this many replicas")
    replicas.add_argument("--max-replicas", type=positive_int, help="autoscale up to this many replicas")
    replicas.add_argument(
        "--target-ongoing-requests", type=positive_float,
        help="autoscaling's target of requests in flight per replica (default 16)",
    )
    replicas.add_argument(
        "--upscale-delay-s", type=non_negative_float,
        help="seconds the load must stay above target before a replica is added (default: Ray's, 30)",
    )
    replicas.add_argument(
        "--downscale-delay-s", type=non_negative_float,
        help="seconds the load must stay below target before a replica is removed (default: Ray's, 600)",
    )
    replicas.add_argument(
        "--threads", type=positive_int, help="torch threads (and Ray CPUs) per replica (default: cores / replicas)"
    )
    replicas.add_argument(
        "--router", choices=("prefix", "default"),
        help="prefix: to the replica holding the prompt's prefix, else the least busy (the default); default: Ray's",
    )
    connections = sub.add_argument_group("connections")
    connections.add_argument(
        "--timeout-keep-alive", type=positive_float, default=defaults.DEFAULT_TIMEOUT_KEEP_ALIVE,
        help=f"seconds an idle kept-alive connection stays open (default {defaults.DEFAULT_TIMEOUT_KEEP_ALIVE:g})",
    )
    connections.add_argument(
        "--read-timeout", type=positive_float, default=defaults.DEFAULT_READ_TIMEOUT,
        help=f"seconds a client gets to send a request's headers and body (default {defaults.DEFAULT_READ_TIMEOUT:g})",
    )
    connections.add_argument(
        "--max-connections", type=positive_int, default=defaults.DEFAULT_MAX_CONNECTIONS,
        help=f"open connections at once; beyond them, 503 (default {defaults.DEFAULT_MAX_CONNECTIONS})",
    )


def server_settings(args: argparse.Namespace) -> ServerSettings:
    """The server's settings from the options; checked here, before the port is taken or any model loads."""
    return ServerSettings(
        api_key=_api_key(args),
        max_queue=args.max_queue,
        max_request_bytes=args.max_request_bytes,
        log_prompts=args.log_prompts,
        shutdown_timeout=args.shutdown_timeout,
        max_image_pixels=args.max_image_pixels,
        max_stop_sequences=args.max_stop_sequences,
        max_logit_bias=args.max_logit_bias,
        timeout_keep_alive=args.timeout_keep_alive,
        read_timeout=args.read_timeout,
        max_connections=args.max_connections,
        max_tools=args.max_tools,
        tool_call_parser=args.tool_call_parser,
        playground=args.playground,
    )


def _api_key(args: argparse.Namespace) -> str | None:
    """--api-key, else --api-key-file's first line, else $INGOT_API_KEY; None (no authentication) if none is given.
    An empty key is refused: it would read as authentication while letting every request in."""
    if args.api_key is not None:
        key, source = args.api_key, "--api-key"
    elif args.api_key_file is not None:
        source = f"--api-key-file {args.api_key_file}"
        try:
            lines = Path(args.api_key_file).expanduser().read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not text"
            raise OptionError(f"{source}: cannot read the key ({reason})") from None
        key = lines[0] if lines else ""
    elif API_KEY_ENV in os.environ:
        key, source = os.environ[API_KEY_ENV], f"${API_KEY_ENV}"
    else:
        return None
    if not key.strip():
        raise OptionError(f"{source} is empty: give a key, or none at all to serve without authentication")
    return key.strip()


def cmd_serve(args: argparse.Namespace) -> None:
    """Take the port first, so a busy one is reported before minutes of compiling or loading, then load every
    model and serve them all under their model names."""
    import logging

    from ingot.artifacts.integrity import check_artifact
    from ingot.artifacts.manifest import Manifest
    from ingot.runtime.engine import Engine
    from ingot.runtime.servable import unservable_reason
    from ingot.runtime.vision.detector import Detector
    from ingot.server.run import bind_socket, serve

    settings = server_settings(args)
    models = args.models or ["smollm2-135m"]
    names = _served_names(args.served_model_name, len(models))
    options = compile_options(args.weight_format, args.activation_dtype)
    if _on_ray(args):
        _serve_replicas(args, settings, models, names[0])
        return
    store = open_store(args)
    with bind_socket(args.host, args.port) as sock:
        artifacts: dict[str, tuple[Path, Manifest]] = {}
        for model, name in zip(models, names):
            path = serving_artifact(store, model, options, args.plain_http, args.no_compile)
            manifest = check_artifact(path)
            refusal = unservable_reason(manifest)
            if refusal:
                raise IngotError(refusal)
            name = name or manifest.model.name
            if name in artifacts:
                raise OptionError(
                    f"two models are named {name}: serve them under distinct names with --served-model-name "
                    "(once per MODEL, in order)"
                )
            artifacts[name] = (path, manifest)

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        engines: dict[str, Engine] = {}
        detectors: dict[str, Detector] = {}
        try:
            for name, (path, manifest) in artifacts.items():
                if manifest.kind == "detector":
                    detectors[name] = Detector(path, manifest)
                else:
                    engines[name] = Engine(
                        path, manifest, kv_cache_gb=args.kv_cache_gb,
                        max_num_batched_tokens=args.max_num_batched_tokens,
                    )  # fmt: skip
        except BaseException:
            for runner in [*engines.values(), *detectors.values()]:
                runner.shutdown()
            raise
        serve(engines, settings, sock, detectors)


def _served_names(names: list[str] | None, models: int) -> list[str | None]:
    """The name each MODEL is served under (None: its model's own)."""
    if names is None:
        return [None] * models
    if len(names) != models:
        raise OptionError(f"--served-model-name: give one name per MODEL ({models} models, {len(names)} names)")
    if not all(name.strip() and name.isprintable() for name in names):
        raise OptionError("--served-model-name: a name is printable text, not empty")
    return names


RAY_OPTIONS = (
    "replicas", "min_replicas", "max_replicas", "target_ongoing_requests", "upscale_delay_s", "downscale_delay_s",
    "threads", "router",
)


def _on_ray(args: argparse.Namespace) -> bool:
    return any(getattr(args, option) is not None for option in RAY_OPTIONS)


def _serve_replicas(args: argparse.Namespace, settings: ServerSettings, models: list[str], name: str | None) -> None:
    """One language model from engine replicas on Ray Serve (ingot/deploy/ray.py); the port is checked first."""
    from pydantic import ValidationError

    from ingot.server.run import bind_socket

    if len(models) > 1:
        raise OptionError("--replicas serves one model; run one application per model")
    if args.max_image_pixels is not None:
        raise OptionError("--max-image-pixels is for detectors, which replicas do not serve")
    try:
        from ingot.deploy.ray import AppOptions, run_locally
    except ImportError as error:
        raise OptionError(f"--replicas needs Ray Serve ({error.name} is missing): pip install 'ingot[ray]'") from None
    chosen = {option: getattr(args, option) for option in RAY_OPTIONS if getattr(args, option) is not None}
    try:
        options = AppOptions(
            model=models[0],
            served_model_name=name,
            weight_format=args.weight_format,
            activation_dtype=args.activation_dtype,
            cache_dir=args.cache_dir,
            kv_cache_gb=args.kv_cache_gb,
            max_num_batched_tokens=args.max_num_batched_tokens,
            max_queue=args.max_queue,
            max_request_bytes=args.max_request_bytes,
            plain_http=args.plain_http,
            no_compile=args.no_compile,
            **chosen,
        )
    except ValidationError as error:
        first = error.errors()[0]
        where, message = ".".join(str(part) for part in first["loc"]), first["msg"].removeprefix("Value error, ")
        raise OptionError(f"--{where.replace('_', '-')}: {message}" if where else message) from None
    bind_socket(args.host, args.port).close()  # a busy port is reported now, before Ray starts
    run_locally(options, settings, args.host, args.port)
