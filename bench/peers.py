"""Side-by-side SmolLM2 speed on this machine, in one run: ingot, transformers, llama.cpp.

    python bench/peers.py [--artifact KEY] [--threads 2] [--json bench/results.json]

Measures, each as the median over --repeats rounds (each round runs every peer once, in turn, in a fresh process,
every workload once untimed before it is timed):
- decode batch 1: tokens/s generating --decode-tokens tokens after a short prompt;
- prefill 512: tokens/s for one 512-token prompt (time to the first token);
- batch 32: total output tokens/s for 32 prompts of 128 tokens, 128 new tokens each;
and this machine's fp32 matmul rate, the ceiling of the compute-bound batch-32 and prefill runs.
llama.cpp runs the demo GGUF as shipped (Q4_1) and dequantized to F32 (the weights ingot and
transformers use), through llama-cpp-python. Peers that are not installed are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.store import ArtifactStore
from ingot.benchmark.offline import run_offline
from ingot.benchmark.workload import fixed_text_prompts, random_token_prompts
from ingot.models.source import builtin_model_path
from ingot.runtime.engine import Engine


def median_of(repeats: int, measure) -> float:
    """The median of ``repeats`` measurements after an untimed one: a workload's first run in a process pays for
    what later runs reuse (the allocator's growth, the math libraries' state for its shapes), once, as a server
    does at its start (ingot's 32 streams: 230 tok/s the first run, 263-292 the next three, session 12)."""
    measure()
    return statistics.median(measure() for _ in range(repeats))


def bench_ingot(path: Path, tokenizer, args) -> dict:
    engine = Engine(path, check_artifact(path), kv_cache_gb=2.0)
    short = fixed_text_prompts(tokenizer, 1, 16)
    run = lambda prompts, out, conc: asyncio.run(run_offline(engine, prompts, out, conc))  # noqa: E731

    def decode() -> float:
        records, _ = run(short, args.decode_tokens, 1)
        r = records[0]
        return (r.output_tokens - 1) / (r.e2el - r.ttft)

    seeds = iter(range(1000))

    def prefill() -> float:  # a new random prompt each time: a cold prompt, not a prefix-cache hit
        records, _ = run(random_token_prompts(tokenizer, 1, 512, seed=next(seeds)), 1, 1)
        return 512 / records[0].ttft

    def batched() -> float:  # new prompts each time too: ingot's prefix cache would serve a repeat's prompts
        records, duration = run(random_token_prompts(tokenizer, 32, 128, seed=next(seeds)), 128, 32)
        return sum(r.output_tokens for r in records) / duration

    result = {
        "decode_b1": median_of(args.repeats, decode),
        "prefill_512": median_of(args.repeats, prefill),
        "batch32_total": median_of(args.repeats, batched),
    }
    engine.shutdown()
    return result


def bench_transformers(path: Path, tokenizer, args) -> dict:
    from ingot.compile.verify.references import reference_model

    model = reference_model(path, check_artifact(path))
    short = torch.tensor(fixed_text_prompts(tokenizer, 1, 16))
    long = torch.tensor(fixed_text_prompts(tokenizer, 1, 512))
    batch = torch.tensor(fixed_text_prompts(tokenizer, 32, 128))

    def generate(ids: torch.Tensor, new: int) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        return time.perf_counter() - start

    def decode() -> float:
        first = generate(short, 1)
        return (args.decode_tokens - 1) / (generate(short, args.decode_tokens) - first)

    def prefill() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model(long)
        return 512 / (time.perf_counter() - start)

    return {
        "decode_b1": median_of(args.repeats, decode),
        "prefill_512": median_of(args.repeats, prefill),
        "batch32_total": median_of(args.repeats, lambda: 32 * 128 / generate(batch, 128)),
    }


def bench_llama_cpp(gguf: Path, tokenizer, args) -> dict:
    from llama_cpp import Llama

    llm = Llama(str(gguf), n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    short = fixed_text_prompts(tokenizer, 1, 16)[0]
    long = fixed_text_prompts(tokenizer, 1, 512)[0]

    def decode() -> float:
        llm.reset()
        llm.eval(short)
        start = time.perf_counter()
        for _ in range(args.decode_tokens):
            token = llm.sample(temp=0)
            llm.eval([token])
        return args.decode_tokens / (time.perf_counter() - start)

    def prefill() -> float:
        llm.reset()
        start = time.perf_counter()
        llm.eval(long)
        return 512 / (time.perf_counter() - start)

    return {"decode_b1": median_of(args.repeats, decode), "prefill_512": median_of(args.repeats, prefill)}


def dequantized_f32(source: Path, directory: Path) -> Path:
    """The shipped Q4_1 GGUF rewritten as F32 by llama.cpp's own quantizer."""
    import llama_cpp

    out = directory / "smollm2-f32.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_ALL_F32
    params.allow_requantize = True
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params) != 0:
        raise RuntimeError("llama.cpp could not write the F32 GGUF")
    return out


def matmul_gflops(repeats: int) -> float:
    """This machine's fp32 matrix-multiply rate (one 2048^3 product): what bounds a compute-bound step."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)

    def rate() -> float:
        start = time.perf_counter()
        torch.mm(a, b)
        return 2 * 2048**3 / (time.perf_counter() - start) / 1e9

    return median_of(max(repeats, 5), rate)


PEERS = ("ingot fp32 (cpu artifact)", "transformers fp32 eager", "llama.cpp F32", "llama.cpp Q4_1")


def measure(peer: str, path: Path, args) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
    if peer.startswith("ingot"):
        return bench_ingot(path, tokenizer, args)
    if peer.startswith("transformers"):
        return bench_transformers(path, tokenizer, args)
    gguf = builtin_model_path("smollm2-135m")
    if peer == "llama.cpp Q4_1":
        return bench_llama_cpp(gguf, tokenizer, args)
    with tempfile.TemporaryDirectory() as tmp:
        return bench_llama_cpp(dequantized_f32(gguf, Path(tmp)), tokenizer, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", help="a compiled smollm2-135m artifact (default: compile or find it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=PEERS, help=argparse.SUPPRESS)  # one peer, in a fresh process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    store = ArtifactStore.open()
    if args.artifact:
        path = store.resolve(args.artifact)
    else:
        from ingot.compile.llm.kind import compile_model
        from ingot.compile.options import CompileOptions

        path = compile_model("smollm2-135m", CompileOptions.parse(), store).path
    if args.only:
        print("RESULT " + json.dumps(measure(args.only, path, args)))
        return

    peers = [p for p in PEERS if not p.startswith("llama.cpp") or importlib.util.find_spec("llama_cpp") is not None]
    if len(peers) < len(PEERS):
        print("llama-cpp-python is not installed: skipping llama.cpp")
    runs: dict[str, list[dict]] = {peer: [] for peer in peers}
    failures: dict[str, dict] = {}
    # Rounds, each peer once a round: a drift of the shared machine's speed during the run spreads over every peer
    # instead of landing on whichever ran then (one peer after another moved the ratios by a third in session 11).
    for _ in range(args.repeats):
        for peer in [p for p in peers if p not in failures]:
            # Each peer in its own process: thread pools left behind by one must not slow the next.
            command = [sys.executable, __file__, "--artifact", str(path), "--only", peer, "--threads",
                       str(args.threads), "--repeats", "1", "--decode-tokens", str(args.decode_tokens)]
            run = subprocess.run(command, capture_output=True, text=True)
            if run.returncode != 0:  # one peer failing (llama.cpp built for instructions this CPU refuses) ends no run
                if run.returncode < 0:
                    reason = f"killed by {signal.Signals(-run.returncode).name}"
                else:
                    reason = (run.stderr.strip().splitlines() or [f"exit status {run.returncode}"])[-1]
                print(f"{peer} failed: {reason}")
                failures[peer] = {"error": reason}
                continue
            runs[peer].append(json.loads(run.stdout.split("RESULT ", 1)[1]))
    results = {
        peer: failures.get(peer) or {key: statistics.median(r[key] for r in samples) for key in samples[0]}
        for peer, samples in runs.items()
    }

    gflops = matmul_gflops(args.repeats)  # after the peers: its thread pool must not share the cores with them
    print(f"fp32 matmul, {args.threads} threads: {gflops:.1f} GFLOP/s")
    print(f"{'':28} {'decode b1 tok/s':>16} {'prefill 512 tok/s':>18} {'batch 32 tok/s':>15}")
    for name, r in results.items():
        cells = [f"{r[k]:.1f}" if k in r else "failed" if "error" in r else "-"
                 for k in ("decode_b1", "prefill_512", "batch32_total")]
        print(f"{name:28} {cells[0]:>16} {cells[1]:>18} {cells[2]:>15}")
    if args.json:
        summary = {"threads": args.threads, "repeats": args.repeats, "matmul_gflops": gflops, "results": results}
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
