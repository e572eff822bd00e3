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


def _add_compile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="built-in name (smollm2-135m), Hugging Face directory, or .gguf file")
    parser.add_argument("--target", help="cpu (default), p150, n150, n300")
    parser.add_argument("--max-batch", type=int, help="largest decode batch (default 32)")
    parser.add_argument("--max-context", type=int, help="longest sequence, prompt plus output (default 2048)")
    parser.add_argument("--block-size", type=int, help="tokens per KV-cache block (default 16)")
    parser.add_argument(
        "--prefill-buckets", type=_int_list, help="prefill chunk sizes, e.g. 16,64,256 (default 16..512 by powers of 2)"
    )
    parser.add_argument(
        "--optimization-level", type=int, choices=(0, 1, 2),
        help="Tenstorrent targets: tt-mlir optimizer level (default 0; 1-2 build device kernels on the host, minutes)",
    )
    parser.add_argument(
        "--allow-cpu-fallback", action="store_true",
        help="Tenstorrent targets: record ops that did not lower to TT-NN instead of failing the compile",
    )


def _options(args: argparse.Namespace):
    from ingot.compile.options import CompileOptions

    return CompileOptions.parse(
        target=args.target,
        max_batch=args.max_batch,
        max_context=args.max_context,
        block_size=args.block_size,
        prefill_buckets=args.prefill_buckets,
        optimization_level=args.optimization_level,
        allow_cpu_fallback=args.allow_cpu_fallback or None,
    )


def cmd_compile(args: argparse.Namespace) -> None:
    from ingot.compile.pipeline import compile_model

    start = time.perf_counter()
    result = compile_model(args.model, _options(args), _store(args), quiet=args.quiet)
    took = time.perf_counter() - start
    if result.cache_hit:
        out.print(f"cache hit: {result.key} (nothing to do, {took:.2f} s)")
    else:
        if not args.quiet and result.manifest.verification:
            _print_verification(result.manifest.verification)
        if not args.quiet and result.manifest.tt:
            _print_tt_programs(result.manifest)
            out.print(f"verification: {result.manifest.tt.device_verification}")
        out.print(f"compiled {result.key} in {took:.1f} s")
    out.print(str(result.path))


def cmd_cache_key(args: argparse.Namespace) -> None:
    from ingot.compile.pipeline import cache_key
    from ingot.models.source import resolve_source

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
    out.print(f"buckets   prefill tokens {manifest.buckets.prefill_tokens}, decode batch {manifest.buckets.decode_batch}")
    out.print(f"context   {manifest.buckets.max_context} tokens, KV blocks of {manifest.kv_cache.block_size}")
    out.print("toolchain " + ", ".join(f"{k} {v}" for k, v in manifest.toolchain.items()))
    programs = Table("program", "kind", "batch", "tokens", "inputs", "file", box=None)
    for p in manifest.programs:
        shapes = ", ".join(f"{t.name}{list(t.shape)}" for t in p.inputs)
        programs.add_row(p.name, p.kind, _range(p.batch), _range(p.tokens), shapes, p.file)
    out.print(programs)
    if manifest.tt:
        _print_tt_programs(manifest)
        out.print(f"verification: {manifest.tt.device_verification}")
    if manifest.verification:
        _print_verification(manifest.verification)


def cmd_verify(args: argparse.Namespace) -> None:
    from ingot.artifacts.manifest import Manifest
    from ingot.compile.reverify import reverify

    path = _store(args).resolve(args.artifact)
    report = reverify(path)
    manifest = Manifest.read(path)
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
    policies = args.tt_policy or ([] if report is not None else ["accuracy", "performance"])
    if policies:
        from ingot.compile.tt.emulate import predict_tt_accuracies

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
    from ingot.compile.options import CompileOptions
    from ingot.compile.pipeline import cache_key, compile_model
    from ingot.errors import ArtifactError, OptionError
    from ingot.models.source import BUILTIN_MODELS, resolve_source
    from ingot.runtime.engine import Engine, unservable_reason
    from ingot.server.run import serve
    from ingot.server.settings import ServerSettings

    store = _store(args)

    def artifact_path(model: str) -> Path:
        """An artifact key, prefix or path; else the model's default-options artifact, compiled on a miss."""
        try:
            return store.resolve(model)
        except ArtifactError:
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
    try:
        for name, (path, manifest) in artifacts.items():
            engines[name] = Engine(path, manifest, kv_cache_gb=args.kv_cache_gb)
    except BaseException:
        for engine in engines.values():
            engine.shutdown()
        raise
    settings = ServerSettings(
        api_key=args.api_key,
        max_queue=args.max_queue,
        max_request_bytes=args.max_request_bytes,
        log_prompts=args.log_prompts,
        shutdown_timeout=args.shutdown_timeout,
    )
    serve(engines, settings, args.host, args.port)


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


def _print_verification(report) -> None:
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
        "--tt-policy", action="append", choices=["accuracy", "performance"],
        help="also predict accuracy under this Tenstorrent format policy (repeatable; a TT artifact gets both)",
    )
    sub = command("gc", cmd_gc, "remove killed builds and artifacts this toolchain cannot load")
    sub.add_argument("--all", action="store_true", help="remove every artifact")
    from ingot.server import settings as serve_defaults

    sub = command("serve", cmd_serve, "serve models over an OpenAI-compatible HTTP API")
    sub.add_argument(
        "models", nargs="*", metavar="MODEL", help="artifact key or path, or a model to compile (default smollm2-135m)"
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
    sub.add_argument("--kv-cache-gb", type=float, help="KV-cache memory per model in GiB (default 1)")
    sub.add_argument("--no-compile", action="store_true", help="serve only models already compiled; never compile")
    sub.add_argument(
        "--shutdown-timeout", type=float, default=serve_defaults.DEFAULT_SHUTDOWN_TIMEOUT,
        help="seconds in-flight requests get to finish after SIGTERM",
    )
    sub.add_argument("--log-prompts", action="store_true", help="include prompt text in the access log")
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
