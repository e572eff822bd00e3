"""The `ingot` command. Errors end here: one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from ingot import __version__
from ingot.artifacts.store import ArtifactStore
from ingot.bench import command as bench_command
from ingot.errors import IngotError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _add_compile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="built-in name (smollm2-135m, yolov4), Hugging Face directory, or .gguf file")
    parser.add_argument("--target", help="cpu (default), p150, n150, n300")
    parser.add_argument("--max-batch", type=int, help="largest decode batch (default 32; yolov4: images, default 8)")
    parser.add_argument("--max-context", type=int, help="longest sequence, prompt plus output (default 2048)")
    parser.add_argument("--block-size", type=int, help="tokens per KV-cache block (default 16)")
    parser.add_argument(
        "--prefill-buckets", type=_int_list, help="prefill chunk sizes, e.g. 16,64,256 (default 16..512 by powers of 2)"
    )
    parser.add_argument(
        "--shared-weights", action="store_true",
        help="cpu: every program reads one weights file instead of carrying a frozen, prepacked copy "
        "(less memory and disk, slower prefill and batched decode)",
    )
    parser.add_argument(
        "--optimization-level", type=int, choices=(0, 1, 2),
        help="Tenstorrent targets: tt-mlir optimizer level (default 0; 1-2 build device kernels on the host, minutes)",
    )
    parser.add_argument(
        "--allow-cpu-fallback", action="store_true",
        help="Tenstorrent targets: record ops that did not lower to TT-NN instead of failing the compile",
    )
    detector = parser.add_argument_group("detectors (yolov4)")
    detector.add_argument("--weights", help="yolov4.weights (Darknet) or the pytorch-YOLOv4 port's .pth/.safetensors")
    detector.add_argument("--random-weights", action="store_true", help="compile with seeded random weights instead")
    detector.add_argument("--input-size", type=int, help="square input size: 320, 416 (default), 512, 608, 640")
    detector.add_argument("--emit", action="append", choices=["onnx"], help="also export the captured graph as ONNX")


LLM_ONLY = ("max_context", "block_size", "prefill_buckets", "shared_weights")
DETECTOR_ONLY = ("weights", "random_weights", "input_size", "emit")


def _refuse_foreign_options(args: argparse.Namespace, detector: bool) -> None:
    for name in DETECTOR_ONLY if not detector else LLM_ONLY:
        if getattr(args, name, None):
            kind = "detectors" if not detector else "language models"
            raise IngotError(f"--{name.replace('_', '-')} is an option for {kind}, not {args.model}")


def _compile(args: argparse.Namespace, store: ArtifactStore, quiet: bool = False):
    """Compile (or find) the artifact of ``args.model`` with the options given; a CompileResult."""
    from ingot.models.yolov4.source import is_detector

    _refuse_foreign_options(args, is_detector(args.model))
    if is_detector(args.model):
        from ingot.compile.detector.kind import compile_detector

        return compile_detector(_detector_source(args), _detector_options(args), store, quiet=quiet)
    from ingot.compile.llm.kind import compile_model

    return compile_model(args.model, _options(args), store, quiet=quiet)


def _detector_source(args: argparse.Namespace):
    from ingot.models.yolov4.source import resolve_detector

    return resolve_detector(args.model, args.weights, args.random_weights)


def _detector_options(args: argparse.Namespace):
    from ingot.compile.options import DetectorOptions

    return DetectorOptions.parse(
        target=args.target,
        input_size=args.input_size,
        max_batch=args.max_batch,
        emit=tuple(args.emit or ()),
        optimization_level=args.optimization_level,
        allow_cpu_fallback=args.allow_cpu_fallback or None,
    )


def _options(args: argparse.Namespace):
    from ingot.compile.options import CompileOptions

    return CompileOptions.parse(
        target=args.target,
        max_batch=args.max_batch,
        max_context=args.max_context,
        block_size=args.block_size,
        prefill_buckets=args.prefill_buckets,
        shared_weights=args.shared_weights or None,
        optimization_level=args.optimization_level,
        allow_cpu_fallback=args.allow_cpu_fallback or None,
    )


def cmd_compile(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    result = _compile(args, _store(args), quiet=args.quiet)
    took = time.perf_counter() - start
    if result.cache_hit:
        out.print(f"cache hit: {result.key} (nothing to do, {took:.2f} s)")
    else:
        if not args.quiet and result.manifest.verification:
            _print_verification(result.manifest.verification)
        if not args.quiet and result.manifest.tt:
            _print_tt_programs(result.manifest)
            out.print(f"verification: {result.manifest.tt.device_verification}")
            for prediction in result.manifest.tt.predicted:
                _print_tt_detection_prediction(prediction)
        out.print(f"compiled {result.key} in {took:.1f} s")
    out.print(str(result.path))


def cmd_cache_key(args: argparse.Namespace) -> None:
    from ingot.compile.pipeline import cache_key
    from ingot.models.source import resolve_source
    from ingot.models.yolov4.source import is_detector

    detector = is_detector(args.model)
    _refuse_foreign_options(args, detector)
    if detector:
        out.print(cache_key(_detector_source(args).digests(), _detector_options(args)))
    else:
        out.print(cache_key(resolve_source(args.model).digests(), _options(args)))


def cmd_ls(args: argparse.Namespace) -> None:
    artifacts = _store(args).list()
    if not artifacts:
        out.print("no artifacts")
        return
    table = Table("key", "model", "family", "target", "size", "created", "status", box=None)
    for artifact in artifacts:
        m = artifact.manifest
        size = sum(f.size for f in m.files.values()) if m else 0
        table.add_row(
            artifact.key,
            m.model.name if m else "?",
            m.model.family if m else "?",
            m.target if m else "?",
            f"{size / 1e6:.1f} MB",
            m.created_at if m else "?",
            artifact.problem or "ok",
        )
    out.print(table)


def cmd_inspect(args: argparse.Namespace) -> None:
    from ingot.artifacts.manifest import Manifest

    path = _store(args).resolve(args.artifact)
    manifest = Manifest.read(path)
    if args.json:
        print(manifest.model_dump_json(indent=2))
        return
    m = manifest.model
    out.print(f"[bold]{manifest.key}[/bold]  {path}")
    out.print(f"model     {m.name} ({m.architecture}, from {m.source_kind})")
    out.print(f"target    {manifest.target}")
    if manifest.detector:
        d = manifest.detector
        out.print(f"input     {d.input_size}x{d.input_size} RGB, letterboxed; batch sizes {d.batch_sizes}")
        out.print(f"classes   {len(d.class_names)} ({', '.join(d.class_names[:4])}, ...); strides {d.strides}")
        out.print(f"anchors   {' '.join(f'{w}x{h}' for w, h in d.anchors)}")
    else:
        out.print(f"buckets   prefill tokens {manifest.buckets.prefill_tokens}, decode batch {manifest.buckets.decode_batch}")
        out.print(f"context   {manifest.buckets.max_context} tokens, KV blocks of {manifest.kv_cache.block_size}")
    out.print("toolchain " + ", ".join(f"{k} {v}" for k, v in manifest.toolchain.items()))
    programs = Table("program", "kind", "batch", "tokens", "inputs", "file", box=None)
    for p in manifest.programs:
        shapes = ", ".join(f"{t.name}{list(t.shape)}" for t in p.inputs)
        programs.add_row(p.name, p.kind, _range(p.batch), _range(p.tokens) if p.tokens else "-", shapes, p.file)
    out.print(programs)
    if manifest.tt:
        _print_tt_programs(manifest)
        out.print(f"verification: {manifest.tt.device_verification}")
        for prediction in manifest.tt.predicted:
            _print_tt_detection_prediction(prediction)
    if manifest.verification:
        _print_verification(manifest.verification)


def cmd_verify(args: argparse.Namespace) -> None:
    from ingot.artifacts.manifest import Manifest
    from ingot.compile.tt.policies import get_policy, policies_for
    from ingot.compile.verify.stored import verify_stored

    path = _store(args).resolve(args.artifact)
    manifest = Manifest.read(path)
    for name in args.tt_policy or []:
        get_policy(name, manifest.kind)  # a policy for the other kind of model is refused before any work
    report = verify_stored(path)
    if report is None:  # a device target: its files check out, and running its programs needs the device
        out.print(
            f"{manifest.target} artifact: its programs need a Tenstorrent device; files and toolchain: ok "
            f"({len(manifest.files)} files); predicting the accuracy of its number formats on the CPU"
        )
        out.print(f"verification: {manifest.tt.device_verification if manifest.tt else 'not available'}")
    else:
        _print_verification(report)
        if not report.passed:
            raise IngotError("verification failed")
    # a device artifact is predicted under every policy for its kind (its programs cannot run here)
    policies = args.tt_policy or ([] if report is not None else [p.name for p in policies_for(manifest.kind)])
    if policies:
        _print_tt_predictions(path, manifest, policies)


def _print_tt_predictions(path, manifest, policies: list[str]) -> None:
    """Predict, on the CPU, the artifact's accuracy under each TT format policy, and print it."""
    if manifest.kind == "detector":
        from ingot.compile.verify.predicted_detector import predict_tt_detector_accuracies

        for prediction in predict_tt_detector_accuracies(path, manifest, policies):
            _print_tt_detection_prediction(prediction)
        return
    from ingot.compile.verify.predicted_llm import predict_tt_accuracies

    for prediction in predict_tt_accuracies(path, manifest, policies):
        _print_tt_prediction(prediction)


def cmd_gc(args: argparse.Namespace) -> None:
    removed = _store(args).gc(everything=args.all)
    for path in removed:
        out.print(f"removed {path}")
    out.print(f"{len(removed)} removed")


def cmd_serve(args: argparse.Namespace) -> None:
    """Resolve (or compile) every model, load its engine, and serve them all under their model names."""
    import logging
    from pathlib import Path

    from ingot.artifacts.integrity import check_artifact
    from ingot.artifacts.manifest import Manifest
    from ingot.compile.llm.kind import compile_model
    from ingot.compile.options import CompileOptions
    from ingot.compile.pipeline import cache_key
    from ingot.errors import ArtifactError, OptionError
    from ingot.models.source import BUILTIN_MODELS, resolve_source
    from ingot.models.yolov4.source import is_detector
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
    store = _store(args)

    def artifact_path(model: str) -> Path:
        """An artifact key, prefix or path; else the model's default-options artifact, compiled on a miss
        (a detector's newest artifact: compiling one needs its weights)."""
        try:
            return store.resolve(model)
        except ArtifactError:
            if is_detector(model):
                return newest_detector_artifact(store, model)
            if model not in BUILTIN_MODELS and not Path(model).expanduser().exists():
                raise
        if not args.no_compile:
            return compile_model(model, CompileOptions(), store).path
        key = cache_key(resolve_source(model).digests(), CompileOptions())
        if not store.has(key):
            raise IngotError(f"{model}: not compiled (no artifact {key}) and --no-compile is set")
        return store.path(key)

    artifacts: dict[str, tuple[Path, Manifest]] = {}
    for model in args.models or ["smollm2-135m"]:
        path = artifact_path(model)
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


def newest_detector_artifact(store: ArtifactStore, model: str):
    """The most recently built loadable artifact of the detector ``model`` (e.g. ``yolov4``) this host can run;
    if there are only device artifacts, the newest one's refusal."""
    from ingot.runtime.servable import unservable_reason

    found = [a for a in store.list() if a.manifest and a.manifest.model.name == model and not a.problem]
    if not found:
        raise IngotError(f"{model} is not compiled: ingot compile {model} --weights yolov4.weights first")
    found.sort(key=lambda a: a.manifest.created_at, reverse=True)
    for artifact in found:
        if unservable_reason(artifact.manifest) is None:
            return artifact.path
    raise IngotError(unservable_reason(found[0].manifest))


def cmd_detect(args: argparse.Namespace) -> None:
    """Detect objects in each image with a detector artifact; print them, and draw them with --out."""
    import json
    from pathlib import Path

    from PIL import Image

    from ingot.artifacts.integrity import check_artifact
    from ingot.errors import ArtifactError
    from ingot.models.yolov4.source import is_detector
    from ingot.runtime.vision.annotate import annotate
    from ingot.runtime.vision.detector import Detector
    from ingot.runtime.vision.postprocess import DetectParams

    out_dir = Path(args.out) if args.out and len(args.images) > 1 else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise IngotError(f"--out {args.out}: with several images, --out is a directory")
    images = []
    for name in args.images:
        try:
            image = Image.open(name)
            image.load()  # decoded now: a truncated file opens fine and fails only here
        except (OSError, Image.DecompressionBombError):  # UnidentifiedImageError is an OSError
            raise IngotError(f"{name}: not an image (or unreadable)") from None
        images.append((Path(name), image))
    store = _store(args)
    try:
        path = store.resolve(args.model)
    except ArtifactError:
        if not is_detector(args.model):
            raise
        path = newest_detector_artifact(store, args.model)
    detector = Detector(path, check_artifact(path))
    try:
        params = DetectParams(args.confidence_threshold, args.iou_threshold, args.max_detections)
        results = [detector.submit(image, params) for _, image in images]  # one batch where they fit
        results = [future.result() for future in results]
    finally:
        detector.shutdown()
    report = []
    for (name, image), result in zip(images, results):
        report.append({"image": str(name), "image_size": list(result.image_size),
                       "detections": [vars(d) | {"box": list(d.box)} for d in result.detections]})  # fmt: skip
        if not args.json:
            table = Table("class", "score", "box (x1, y1, x2, y2)", box=None,
                          title=f"{name}: {len(result.detections)} detections")  # fmt: skip
            for d in result.detections:
                table.add_row(d.class_name, f"{d.score:.3f}", ", ".join(f"{v:.0f}" for v in d.box))
            out.print(table)
        if args.out:
            target = out_dir / f"{name.stem}.annotated.png" if out_dir else Path(args.out)
            target.parent.mkdir(parents=True, exist_ok=True)
            annotate(image, result.detections).save(target)
            if not args.json:
                out.print(f"wrote {target}")
    if args.json:
        print(json.dumps(report))


def _print_tt_programs(manifest) -> None:
    """Per program: its status and the TTNN ops it lowered to (bookkeeping ops counted apart)."""
    from ingot.compile.tt.ops import BOOKKEEPING

    tt = manifest.tt.spec
    title = f"TT-NN programs for {tt['device']} (optimization level {manifest.programs[0].tt.optimization_level})"
    table = Table("program", "status", "ops", "TTNN compute ops (count)", box=None, title=title)
    for p in manifest.programs:
        info = p.tt
        compute = {op: n for op, n in info.ttnn_ops.items() if op not in BOOKKEEPING}
        listing = ", ".join(f"{op.removeprefix('ttnn.')} {n}" for op, n in compute.items())
        if info.status != "lowered":
            listing = "not lowered: " + ", ".join(info.unlowered_ops)
        table.add_row(p.name, info.status, str(sum(info.ttnn_ops.values())), listing)
    out.print(table)


def _range(bounds: tuple[int, int]) -> str:
    return str(bounds[0]) if bounds[0] == bounds[1] else f"{bounds[0]}..{bounds[1]}"


def _print_tt_prediction(report) -> None:
    tt = report.tenstorrent
    reported = f"{tt.reported_model} reported by tt-metal" if tt.reported_top1 is not None else ""
    table = Table(
        "metric", "predicted", "Tenstorrent", box=None,
        title=f"predicted TT accuracy, {report.policy} policy ({report.description}), against {report.reference}",
    )
    table.add_row("logits PCC", f"{report.pcc:.6f}", f">= {tt.min_pcc}")
    table.add_row("max abs error", f"{report.max_abs_error:.3g}", "")
    top1 = f"{tt.reported_top1:.0%} ({reported})" if tt.reported_top1 is not None else ""
    top5 = f"{tt.reported_top5:.0%} ({reported})" if tt.reported_top5 is not None else ""
    table.add_row("top-1 agreement", f"{report.top1_agreement:.2%}", top1)
    table.add_row("top-5 agreement", f"{report.top5_agreement:.2%}", top5)
    table.add_row("tokens", f"{report.num_tokens} teacher-forced", "")
    table.add_row("PCC", "[green]meets 0.99[/green]" if report.meets_tt_pcc else "[red]below 0.99[/red]", "")
    out.print(table)


def _print_tt_detection_prediction(report) -> None:
    tt = report.tenstorrent
    table = Table(
        "metric", "predicted", "Tenstorrent (tt-metal YOLOv4)", box=None,
        title=f"predicted TT accuracy, {report.policy} policy ({report.description}), against {report.reference}",
    )
    boxes_bar = f">= {tt.min_box_pcc} (Blackhole: >= {tt.min_box_pcc_blackhole})"
    table.add_row("boxes PCC", f"{report.box_pcc:.6f}", boxes_bar)
    table.add_row("confidences PCC", f"{report.confidence_pcc:.6f}", f">= {tt.min_confidence_pcc}")
    table.add_row("head maps PCC", f"{report.head_pcc:.6f}", "")
    table.add_row("max abs error", f"{report.max_abs_error:.3g}", "")
    table.add_row("images", f"{report.images} at {report.input_size}x{report.input_size}", "")
    verdict = "[green]meets[/green]" if report.meets_tt_pcc else "[red]below[/red]"
    table.add_row("PCC", f"{verdict} {tt.min_box_pcc} / {tt.min_confidence_pcc}", "")
    out.print(table)


def _print_verification(report) -> None:
    from ingot.artifacts.manifest import DetectionVerificationReport

    if isinstance(report, DetectionVerificationReport):
        _print_detection_verification(report)
        return
    table = Table("metric", "value", "threshold", box=None, title=f"verification against {report.reference}")
    table.add_row("logits PCC", f"{report.pcc:.7f}", f">= {report.min_pcc}")
    table.add_row("max abs error", f"{report.max_abs_error:.3g}", "")
    table.add_row("top-1 agreement", f"{report.top1_agreement:.2%}", f">= {report.min_top1:.0%}")
    table.add_row("top-5 agreement", f"{report.top5_agreement:.2%}", "")
    for name, value in report.programs.items():
        table.add_row(f"PCC {name}", f"{value:.7f}", f">= {report.min_pcc}")
    table.add_row("tokens", f"{report.num_tokens} ({report.prefill_tokens} prefill + {report.decode_steps} decode)", "")
    table.add_row("result", "[green]passed[/green]" if report.passed else "[red]FAILED[/red]", "")
    out.print(table)


def _print_detection_verification(report) -> None:
    table = Table("metric", "value", "threshold", box=None, title=f"verification against {report.reference}")
    table.add_row("boxes PCC", f"{report.box_pcc:.7f}", f">= {report.min_box_pcc}")
    table.add_row("confidences PCC", f"{report.confidence_pcc:.7f}", f">= {report.min_confidence_pcc}")
    table.add_row("max abs error", f"{report.max_abs_error:.3g}", "")
    for name, value in report.programs.items():
        table.add_row(f"PCC {name}", f"{value:.7f}", f">= {report.min_box_pcc}")
    if report.onnx_pcc is not None:
        table.add_row("PCC ONNX (onnxruntime)", f"{report.onnx_pcc:.7f}", f">= {report.min_onnx_pcc}")
    table.add_row("images", f"{report.images} at {report.input_size}x{report.input_size}", "")
    table.add_row("result", "[green]passed[/green]" if report.passed else "[red]FAILED[/red]", "")
    out.print(table)


def _store(args: argparse.Namespace) -> ArtifactStore:
    return ArtifactStore.open(args.cache_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingot", description="Compile models ahead of time and serve them.")
    parser.add_argument("--version", action="version", version=f"ingot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--cache-dir", help="artifact cache (default $INGOT_CACHE_DIR or the user cache dir)")
        sub.set_defaults(handler=handler)
        return sub

    sub = command("compile", cmd_compile, "compile a model into a verified artifact (a cache hit does nothing)")
    _add_compile_options(sub)
    sub.add_argument("--quiet", action="store_true", help="no progress output (for CI)")
    _add_compile_options(command("cache-key", cmd_cache_key, "print the artifact key without compiling"))
    command("ls", cmd_ls, "list cached artifacts")
    sub = command("inspect", cmd_inspect, "show an artifact's manifest")
    sub.add_argument("artifact", help="key, key prefix, or path")
    sub.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    sub = command("verify", cmd_verify, "check an artifact's files and re-run its accuracy check")
    sub.add_argument("artifact", help="key, key prefix, or path")
    sub.add_argument(
        "--tt-policy", action="append", choices=["accuracy", "performance", "yolov4"],
        help="also predict accuracy under this Tenstorrent format policy (repeatable; a TT artifact gets every "
        "policy for its kind: accuracy and performance for language models, yolov4 for detectors)",
    )
    sub = command("gc", cmd_gc, "remove killed builds and artifacts this toolchain cannot load")
    sub.add_argument("--all", action="store_true", help="remove every artifact")
    from ingot.server import settings as serve_defaults

    sub = command("serve", cmd_serve, "serve models over an OpenAI-compatible HTTP API")
    sub.add_argument(
        "models", nargs="*", metavar="MODEL",
        help="artifact key or path, a model to compile (default smollm2-135m), or yolov4 (its newest artifact)",
    )
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sub.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    sub.add_argument("--api-key", help="require this bearer token on every request but /health, /metrics and /version")
    sub.add_argument(
        "--max-queue", type=int, default=serve_defaults.DEFAULT_MAX_QUEUE, help="requests in flight per model, then 429"
    )
    sub.add_argument(
        "--max-request-bytes", type=int, default=serve_defaults.DEFAULT_MAX_REQUEST_BYTES, help="largest request body"
    )
    sub.add_argument("--kv-cache-gb", type=_positive_float, help="KV-cache memory per model in GiB (default 1)")
    sub.add_argument(
        "--max-num-batched-tokens", type=int,
        help="tokens one engine step computes at most (a prefill chunk, a decode batch); default: the largest bucket",
    )
    sub.add_argument("--no-compile", action="store_true", help="serve only models already compiled; never compile")
    sub.add_argument(
        "--shutdown-timeout", type=float, default=serve_defaults.DEFAULT_SHUTDOWN_TIMEOUT,
        help="seconds in-flight requests get to finish after SIGTERM",
    )
    sub.add_argument("--log-prompts", action="store_true", help="include prompt text in the access log")
    sub.add_argument(
        "--max-image-pixels", type=int, default=serve_defaults.DEFAULT_MAX_IMAGE_PIXELS,
        help="larger images sent to /v1/detections get 413 (default: Pillow's decompression-bomb limit)",
    )
    sub = command("detect", cmd_detect, "detect objects in images with a detector artifact (e.g. yolov4)")
    sub.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG, PNG, WebP, ... files")
    sub.add_argument("--model", default="yolov4", help="artifact key, prefix or path, or yolov4 (its newest artifact)")
    sub.add_argument("--out", help="write the image with the detections drawn (a directory for several images)")
    sub.add_argument("--confidence-threshold", type=float, help="minimum score (default 0.25)")
    sub.add_argument("--iou-threshold", type=float, help="NMS overlap above which a weaker box is dropped (default 0.45)")
    sub.add_argument("--max-detections", type=int, help="most detections per image (default 100)")
    sub.add_argument("--json", action="store_true", help="print the detections as JSON")
    cache_dir = argparse.ArgumentParser(add_help=False)
    cache_dir.add_argument("--cache-dir", help="artifact cache (default $INGOT_CACHE_DIR or the user cache dir)")
    bench_command.add_parser(commands, cache_dir)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except IngotError as error:
        err.print(f"error: {error}", markup=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
