"""One model at scale, ingot beside llama.cpp in one run: compile time, disk, serving memory and speed.

    python bench/model_scale.py MODEL [--json FILE] [--markdown FILE] [--llama-server PATH] [--kv-cache-gb 1]
        [--work-dir DIR] [-- INGOT COMPILE OPTIONS]

MODEL is the demo (`smollm2-135m`), a Hugging Face directory, or a shape of `ingot.benchmark.shapes`
(`llama-3.2-1b`, `qwen2.5-0.5b`, `qwen3-0.6b`), whose random-weight model is written into the work directory first.

ingot: a cold `ingot compile` into a cache directory of its own (wall time and the peak RSS of the compile and its
workers), the artifact's bytes on disk, then `ingot serve --no-compile` in a subprocess: its RSS after warm-up and
after the workloads, and the workloads through its HTTP API. llama.cpp: `llama-server` (bench/build_llama_server.sh)
on the same weights as an F32 GGUF (`ingot.benchmark.gguf_f32`: the demo's GGUF dequantized, an HF model converted),
with as many KV-cache tokens as ingot's cache holds: its RSS, and the same workloads through the same client.

Workloads (`ingot.benchmark.online`, random-token prompts, new ones for every run so no prompt cache serves them;
each once untimed, then the median of --repeats runs):
- decode batch 1: one stream, a 16-token prompt, --decode-tokens new tokens: 1 / TPOT;
- prefill: one --prefill-tokens prompt, one new token: prompt tokens / TTFT;
- streams: --streams prompts of --stream-input-len tokens at once, --stream-output-len new tokens each: output tok/s.
llama-server runs decode and prefill with one slot holding the whole cache, and the streams with --streams slots
sharing it (each slot then holds a stream's prompt and output).

Needs a quiet machine: run the 1B shape only where nothing else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from ingot.artifacts.store import ArtifactStore
from ingot.benchmark.launch import free_port, running
from ingot.benchmark.online import run_online
from ingot.benchmark.report import summarize
from ingot.benchmark.workload import random_token_prompts

sys.path.insert(0, str(Path(__file__).parent))
from online_peers import LLAMA_SERVER, llama_server_command, slot_tokens

DECODE_PROMPT_TOKENS = 16


def prepare_model(model: str, work_dir: Path) -> tuple[str, Path]:
    """The MODEL argument for ingot, and the F32 GGUF of the same weights for llama.cpp (both written as needed)."""
    from ingot.benchmark.gguf_f32 import dequantized_gguf, hf_to_gguf
    from ingot.benchmark.shapes import SHAPES, demo_tokenizer, model_config, write_random_model
    from ingot.models.source import BUILTIN_MODELS, resolve_source

    if model in SHAPES:
        directory = work_dir / model
        if not directory.exists():
            start = time.perf_counter()
            tokenizer = demo_tokenizer()
            write_random_model(model_config(SHAPES[model], tokenizer), tokenizer, directory)
            print(f"wrote the random {model} in {time.perf_counter() - start:.0f} s")
        model = str(directory)
    source = resolve_source(model)
    gguf = work_dir / f"{source.name}-f32.gguf"
    if not gguf.exists():
        start = time.perf_counter()
        if source.kind == "gguf":
            dequantized_gguf(source.path, gguf)
        else:
            hf_to_gguf(source.path, gguf)
        print(f"wrote {gguf.name} in {time.perf_counter() - start:.0f} s")
    return (model if model in BUILTIN_MODELS else str(source.path)), gguf


def tree_rss(process: psutil.Process) -> int:
    """A process's RSS with its children's (a compile's lowering workers)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_with_peak_rss(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run ``command`` to its end: wall seconds and the peak RSS of its process tree (sampled every 0.2 s)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env)
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, tree_rss(watched))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    if process.wait() != 0:
        raise SystemExit(f"{' '.join(command[:5])} ... failed with exit status {process.returncode}")
    return time.perf_counter() - start, peak


def compile_cold(model: str, cache_dir: Path, compile_args: list[str]) -> dict:
    """A cold `ingot compile` in its own cache directory (a fresh inductor cache inside it)."""
    env = dict(os.environ, INGOT_CACHE_DIR=str(cache_dir))
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)  # the compile then keeps inductor's cache in the new store: cold
    ingot = [sys.executable, "-m", "ingot.cli"]
    seconds, peak = run_with_peak_rss([*ingot, "compile", model, *compile_args], env)
    key = subprocess.run(
        [*ingot, "cache-key", model, *compile_args], env=env, check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    path = ArtifactStore(cache_dir).path(key)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {
        "key": key, "path": str(path), "cache_dir": str(cache_dir), "compile_s": seconds, "compile_peak_rss": peak,
        "artifact_bytes": size,
    }  # fmt: skip


class Workloads:
    """The three workloads against one server, each once untimed and then ``repeats`` times, new prompts each run."""

    def __init__(self, port: int, model: str, tokenizer, args: argparse.Namespace) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.model = model
        self.tokenizer = tokenizer
        self.args = args
        self.seed = 0

    def _run(self, count: int, input_len: int, output_len: int) -> dict:
        self.seed += 1
        prompts = random_token_prompts(self.tokenizer, count, input_len, seed=self.seed)
        texts = [(self.tokenizer.decode(p), len(p)) for p in prompts]
        records, duration = asyncio.run(
            run_online(self.url, "/v1/completions", self.model, texts, output_len, concurrency=count)
        )
        summary = summarize(records, duration, {})
        if summary["failures"]:
            raise RuntimeError(f"{summary['failures']} requests failed: {summary['errors']}")
        return summary

    def _median(self, measure: Callable[[], float]) -> float:
        measure()
        return statistics.median(measure() for _ in range(self.args.repeats))

    def decode(self) -> float:
        return self._median(
            lambda: 1000 / self._run(1, DECODE_PROMPT_TOKENS, self.args.decode_tokens)["tpot_ms"]["median"]
        )

    def prefill(self) -> float:
        def rate() -> float:
            summary = self._run(1, self.args.prefill_tokens, 1)
            return summary["prompt_tokens"] / (summary["ttft_ms"]["median"] / 1000)  # the server's own token count

        return self._median(rate)

    def streams(self) -> float:
        args = self.args
        return self._median(
            lambda: self._run(args.streams, args.stream_input_len, args.stream_output_len)["output_throughput"]
        )


def bench_ingot(artifact: dict, tokenizer, args: argparse.Namespace) -> dict:
    from ingot.artifacts.manifest import Manifest
    from ingot.runtime.kv_sizing import kv_cache_blocks
    from ingot.runtime.serving_memory import expected_serving_bytes, kv_cache_bytes, weight_bytes

    manifest = Manifest.read(Path(artifact["path"]))
    blocks = kv_cache_blocks(manifest.kv_cache, manifest.buckets.max_context, args.kv_cache_gb)
    port = free_port()
    command = [
        sys.executable, "-m", "ingot.cli", "serve", artifact["key"], "--no-compile", "--port", str(port),
        "--kv-cache-gb", str(args.kv_cache_gb),
    ]  # fmt: skip
    env = dict(os.environ, INGOT_CACHE_DIR=artifact["cache_dir"])
    with running(command, port, env) as server:
        warm = tree_rss(server)
        workloads = Workloads(port, manifest.model.name, tokenizer, args)
        result = {"decode_b1": workloads.decode(), "prefill": workloads.prefill(), "streams": workloads.streams()}
        result["rss_after_workloads"] = tree_rss(server)
    return artifact | result | {
        "rss_after_warm_up": warm,
        "weight_bytes": weight_bytes(manifest),
        "kv_cache_bytes": kv_cache_bytes(manifest, args.kv_cache_gb),
        "kv_cache_tokens": (blocks - 1) * manifest.kv_cache.block_size,  # block 0 is the padding block
        "expected_rss": expected_serving_bytes(manifest, args.kv_cache_gb),
    }


def bench_llama_server(gguf: Path, context: int, tokenizer, args: argparse.Namespace) -> dict:
    """``context``: ingot's KV-cache tokens. One slot for decode and prefill; --streams slots for the streams (more
    context than ingot's only if a slot could not hold a stream otherwise, and then said)."""
    result: dict = {"gguf": str(gguf), "gguf_bytes": gguf.stat().st_size, "kv_cache_type": args.llama_kv_type}
    def command(port: int, slots: int, context: int) -> list[str]:
        return llama_server_command(
            args.llama_server, gguf, port, slots, context, args.threads, alias="model", kv_type=args.llama_kv_type
        )

    port = free_port()
    with running(command(port, 1, context), port) as server:
        result["rss_after_load"] = tree_rss(server)
        workloads = Workloads(port, "model", tokenizer, args)
        result["decode_b1"] = workloads.decode()
        result["rss_after_warm_up"] = tree_rss(server)  # its first requests done, as ingot's warm-up
        result["prefill"] = workloads.prefill()
        result["kv_cache_tokens"] = context
    streams_context = max(context, args.streams * slot_tokens(args.stream_input_len, args.stream_output_len))
    if streams_context > context:
        result["streams_kv_cache_tokens"] = streams_context
    port = free_port()
    with running(command(port, args.streams, streams_context), port) as server:
        result["streams"] = Workloads(port, "model", tokenizer, args).streams()
        result["rss_after_workloads"] = tree_rss(server)  # the streams server
    return result


ROWS = [  # (label, key, unit scale, format)
    ("compile (cold)", "compile_s", 1, "{:.0f} s"),
    ("compile peak RSS", "compile_peak_rss", 1e9, "{:.2f} GB"),
    ("artifact / GGUF on disk", "artifact_bytes", 1e9, "{:.2f} GB"),
    ("weights", "weight_bytes", 1e9, "{:.2f} GB"),
    ("KV cache (tokens)", "kv_cache_tokens", 1, "{:.0f}"),
    ("RSS after warm-up", "rss_after_warm_up", 1e9, "{:.2f} GB"),
    ("RSS target (weights + KV + 0.6 GB)", "expected_rss", 1e9, "{:.2f} GB"),
    ("RSS after the workloads", "rss_after_workloads", 1e9, "{:.2f} GB"),
    ("decode batch 1 (tok/s)", "decode_b1", 1, "{:.1f}"),
    ("prefill (tok/s)", "prefill", 1, "{:.1f}"),
    ("streams, output (tok/s)", "streams", 1, "{:.1f}"),
]


def markdown(results: dict) -> str:
    ingot, peer = results["ingot"], results.get("llama-server F32", {})
    peer = peer | {"artifact_bytes": peer.get("gguf_bytes")} if peer else peer
    settings = results["settings"]
    lines = [
        f"{results['model']}: kv-cache-gb {settings['kv_cache_gb']}, prefill {settings['prefill_tokens']} tokens, "
        f"{settings['streams']} streams of {settings['stream_input_len']}+{settings['stream_output_len']} tokens, "
        f"{settings['threads']} threads, median of {settings['repeats']}",
        "",
        "| | ingot fp32 | llama-server F32 | ingot / llama-server |",
        "|---|---|---|---|",
    ]
    for label, key, scale, form in ROWS:
        mine, theirs = ingot.get(key), peer.get(key)
        cells = [form.format(v / scale) if v is not None else "-" for v in (mine, theirs)]
        ratio = f"{mine / theirs:.2f}x" if mine is not None and theirs else "-"
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio} |")
    return "\n".join(lines) + "\n"


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The servers' settings, the workloads and the outputs, which bench/weight_formats.py shares."""
    parser.add_argument("--kv-cache-gb", type=float, default=1.0, help="ingot's KV cache; llama-server gets as many tokens")
    parser.add_argument("--llama-server", type=Path, default=LLAMA_SERVER, help="llama.cpp's llama-server binary")
    parser.add_argument("--llama-kv-type", default="f16", help="llama-server's KV-cache type (its default: f16)")
    parser.add_argument("--threads", type=int, default=2, help="llama-server's threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--prefill-tokens", type=int, default=512)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--stream-input-len", type=int, default=128)
    parser.add_argument("--stream-output-len", type=int, default=128)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)


def main() -> None:
    argv = sys.argv[1:]
    compile_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="smollm2-135m, a Hugging Face directory, or a shape (llama-3.2-1b, ...)")
    parser.add_argument("--work-dir", type=Path, help="models, GGUFs and the artifact (default: a new temporary one)")
    add_workload_arguments(parser)
    args = parser.parse_args(argv)
    if not args.llama_server.is_file():
        parser.error(f"no llama-server at {args.llama_server}: build it with bench/build_llama_server.sh")

    from transformers import AutoTokenizer

    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="model-scale-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    model, gguf = prepare_model(args.model, work_dir)
    artifact = compile_cold(model, work_dir / "cache", compile_args)
    print(f"compiled in {artifact['compile_s']:.0f} s: {artifact['path']}")
    tokenizer = AutoTokenizer.from_pretrained(Path(artifact["path"]) / "tokenizer")
    results = {
        "model": args.model,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {"compile_args": compile_args},
        "ingot": bench_ingot(artifact, tokenizer, args),
    }
    results["llama-server F32"] = bench_llama_server(gguf, results["ingot"]["kv_cache_tokens"], tokenizer, args)
    table = markdown(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
