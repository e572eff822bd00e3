"""`ingot compile` and `ingot cache-key`: one set of compile options, for a language model or a detector."""

from __future__ import annotations

import argparse
import time

from ingot.artifacts.store import ArtifactStore
from ingot.cli.arguments import add_command, int_list
from ingot.cli.locate import open_store
from ingot.cli.printing import out, print_tt_build, print_verification
from ingot.errors import IngotError

LLM_ONLY = (
    "max_context",
    "block_size",
    "prefill_buckets",
    "kv_cache_dtype",
    "weight_format",
    "activation_dtype",
    "allow_low_accuracy",
)
DETECTOR_ONLY = ("weights", "random_weights", "input_size", "emit")


def add_parsers(commands: argparse._SubParsersAction, cache_dir: argparse.ArgumentParser) -> None:
    options = compile_options_parent()
    sub = add_command(
        commands,
        "compile",
        cmd_compile,
        "compile a model into a verified artifact (a cache hit does nothing)",
        parents=[cache_dir, options],
    )
    sub.add_argument("--quiet", action="store_true", help="no progress output (for CI)")
    add_command(commands, "cache-key", cmd_cache_key, "print the artifact key without compiling", [cache_dir, options])


def compile_options_parent() -> argparse.ArgumentParser:
    """MODEL and the options that make its artifact key, which `compile` and `cache-key` share."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("model", help="built-in name (smollm2-135m, yolov4), Hugging Face directory, or .gguf file")
    parser.add_argument("--target", help="cpu (default), p150, n150, n300 (Wormhole: optimization level 0)")
    parser.add_argument("--max-batch", type=int, help="largest decode batch (default 32; yolov4: images, default 8)")
    parser.add_argument("--max-context", type=int, help="longest sequence, prompt plus output (default 2048)")
    parser.add_argument(
        "--block-size", type=int, help="tokens per KV-cache block (default 16; 32 on Tenstorrent targets)"
    )
    parser.add_argument(
        "--kv-cache-dtype",
        help="cpu: the KV cache's keys and values in fp32 (default) or bf16 (half the bytes: twice the tokens)",
    )
    parser.add_argument(
        "--prefill-buckets", type=int_list, help="prefill chunk sizes, e.g. 16,64,256 (default 16..512 by powers of 2)"
    )
    parser.add_argument(
        "--cpu-isa",
        help="cpu: the vector ISA the native code needs, avx2 or avx512 (a portable artifact for a fleet); "
        "default native: this CPU's own",
    )
    parser.add_argument(
        "--weight-format",
        help="cpu: the number format linear weights are stored in: fp32 (default), bf16, bfp8, bfp4 (Tenstorrent's "
        "bfloat16, bfloat8_b, bfloat4_b), or a Tenstorrent policy choosing per layer: accuracy (bf16 attention, bfp8 "
        "MLP), performance (bfp8 attention, bfp4 gate/up, bfp8 down); Tenstorrent targets: bfp8 or bfp4, every "
        "matmul weight converted in the binary (conv weights and the rest stay fp32)",
    )
    parser.add_argument(
        "--activation-dtype",
        help="cpu: the inputs of linears whose weights are not fp32, fp32 (default) or bf16: rounded to bfloat16 as "
        "a Tenstorrent device holds them and multiplied with AVX512-BF16 (needs --cpu-isa avx512 and a CPU with "
        "avx512_bf16)",
    )
    parser.add_argument(
        "--allow-low-accuracy",
        action="store_true",
        help="with --weight-format other than fp32: publish an artifact whose logits PCC against float32 is below "
        "Tenstorrent's 0.99, recording it in its report, instead of failing the compile",
    )
    parser.add_argument(
        "--optimization-level",
        type=int,
        choices=(0, 1, 2),
        help="Tenstorrent targets: tt-mlir optimizer level (default 0; 1-2 build device kernels on the host, minutes)",
    )
    parser.add_argument(
        "--allow-cpu-fallback",
        action="store_true",
        help="Tenstorrent targets: record ops that did not lower to TT-NN instead of failing the compile",
    )
    parser.add_argument(
        "--allow-unverified",
        action="store_true",
        help="Tenstorrent targets: record a program whose JAX conversion disagrees with its torch program "
        "(PCC < 0.9999 on JAX's CPU backend) instead of failing the compile",
    )
    detector = parser.add_argument_group("detectors (yolov4)")
    detector.add_argument("--weights", help="yolov4.weights (Darknet) or the pytorch-YOLOv4 port's .pth/.safetensors")
    detector.add_argument("--random-weights", action="store_true", help="compile with seeded random weights instead")
    detector.add_argument("--input-size", type=int, help="square input size: 320, 416 (default), 512, 608, 640")
    detector.add_argument("--emit", action="append", choices=["onnx"], help="also export the captured graph as ONNX")
    return parser


def cmd_compile(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    result = _compile_artifact(args, open_store(args), quiet=args.quiet)
    took = time.perf_counter() - start
    if result.cache_hit:
        out.print(f"cache hit: {result.key} (nothing to do, {took:.2f} s)")
    else:
        if not args.quiet and result.manifest.verification:
            print_verification(result.manifest.verification)
        if not args.quiet and result.manifest.tt:
            print_tt_build(result.manifest)
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


def _compile_artifact(args: argparse.Namespace, store: ArtifactStore, quiet: bool = False):
    """Compile (or find) the artifact of ``args.model`` with the options given; a CompileResult."""
    from ingot.models.yolov4.source import is_detector

    _refuse_foreign_options(args, is_detector(args.model))
    if is_detector(args.model):
        from ingot.compile.detector.kind import compile_detector

        return compile_detector(_detector_source(args), _detector_options(args), store, quiet=quiet)
    from ingot.compile.llm.kind import compile_model

    return compile_model(args.model, _options(args), store, quiet=quiet)


def _refuse_foreign_options(args: argparse.Namespace, detector: bool) -> None:
    for name in DETECTOR_ONLY if not detector else LLM_ONLY:
        if getattr(args, name, None):
            kind = "detectors" if not detector else "language models"
            raise IngotError(f"--{name.replace('_', '-')} is an option for {kind}, not {args.model}")


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
        cpu_isa=args.cpu_isa,
        optimization_level=args.optimization_level,
        allow_cpu_fallback=args.allow_cpu_fallback or None,
        allow_unverified=args.allow_unverified or None,
    )


def _options(args: argparse.Namespace):
    from ingot.compile.options import CompileOptions

    return CompileOptions.parse(
        target=args.target,
        max_batch=args.max_batch,
        max_context=args.max_context,
        block_size=args.block_size,
        prefill_buckets=args.prefill_buckets,
        kv_cache_dtype=args.kv_cache_dtype,
        cpu_isa=args.cpu_isa,
        optimization_level=args.optimization_level,
        allow_cpu_fallback=args.allow_cpu_fallback or None,
        allow_unverified=args.allow_unverified or None,
        weight_format=args.weight_format,
        activation_dtype=args.activation_dtype,
        allow_low_accuracy=args.allow_low_accuracy or None,
    )
