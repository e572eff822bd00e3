"""ingot's weight formats beside llama.cpp's nearest formats, in one run: decode, prefill, 32 streams and memory.

    python bench/weight_formats.py MODEL [--work-dir DIR] [--formats bf16,bfp8,bfp8:bf16] [--llama-types BF16,Q8_0,Q4_1]
        [--kv-cache-dtype bf16] [--no-transformers] [--json FILE] [--markdown FILE] [--llama-server PATH] [...model_scale's workload options]

MODEL as for bench/model_scale.py (the demo or a shape such as `llama-3.2-1b`). ingot: one artifact per
`--weight-format` (compiled into DIR/cache unless already there, with `--allow-low-accuracy`: a random-weight shape
measures speed only; the accuracy is the compile's verification report; FORMAT:bf16 adds `--activation-dtype bf16`,
the products' inputs rounded to bfloat16 on AVX512-BF16). llama.cpp: llama-server on the F32 GGUF of
the same weights quantized to each of --llama-types by the gguf package's quantizers
(`ingot.benchmark.gguf_f32.quantized_gguf`: every matrix in the type, vectors in F32, as `llama-quantize --pure`).
Each server gets as many KV-cache tokens as ingot's cache holds; llama-server's f16 cache has the bytes per token of
ingot's bf16 one. The workloads and memory readings are model_scale's, each server measured once a round (a fresh
server, one untimed run of each workload, then one timed) and every server once in each of --repeats rounds; the
table gives the medians over the rounds. This machine's memory rate drifts within the hour, so a peer measured in
turn with ingot, round by round, meets the same machine, where one measured after all of ingot's repeats may not.

Pairs compared (Tenstorrent format -> llama.cpp's nearest): bf16 -> BF16, bfp8 -> Q8_0, bfp4 -> Q4_1. The best
format's 32 streams are also set against transformers' batched generate in float32 eager (the streams' prompts as
one batch, `--stream-output-len` new tokens each, in this process with --threads threads; `--no-transformers` skips
it). Needs a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import gguf
import torch

sys.path.insert(0, str(Path(__file__).parent))
from model_scale import ROWS, add_workload_arguments, bench_ingot, bench_llama_server, compile_cold, prepare_model

NEAREST = {"fp32": "F32", "bf16": "BF16", "bfp8": "Q8_0", "bfp4": "Q4_1"}
SPEED_ROWS = [row for row in ROWS if row[1] in ("decode_b1", "prefill", "streams")]
MEMORY_ROWS = [row for row in ROWS if row[1] in ("weight_bytes", "rss_after_warm_up", "expected_rss", "rss_after_workloads")]


def llama_gguf(f32: Path, quant: str) -> Path:
    from ingot.benchmark.gguf_f32 import quantized_gguf

    if quant == "F32":
        return f32
    out = f32.with_name(f32.name.replace("-f32.gguf", f"-{quant}.gguf"))
    if not out.exists():
        quantized_gguf(f32, out, gguf.GGMLQuantizationType[quant])
    return out


def bench_transformers_batched(artifact: dict, tokenizer, args: argparse.Namespace) -> float:
    """Output tokens/s of transformers' generate on the streams' prompts as one batch, in float32 eager (the
    artifact's weights decoded to float32: the speed of float32 whatever the values)."""
    from ingot.artifacts.integrity import check_artifact
    from ingot.benchmark.workload import random_token_prompts
    from ingot.compile.verify.references import reference_model

    path = Path(artifact["path"])
    model = reference_model(path, check_artifact(path))
    torch.set_num_threads(args.threads)
    new = args.stream_output_len
    seeds = iter(range(1, args.repeats + 2))

    def rate() -> float:
        ids = torch.tensor(random_token_prompts(tokenizer, args.streams, args.stream_input_len, seed=next(seeds)))
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                           do_sample=False, pad_token_id=tokenizer.eos_token_id)  # fmt: skip
        return args.streams * new / (time.perf_counter() - start)

    rate()
    return statistics.median(rate() for _ in range(args.repeats))


def median_of_rounds(rounds: list[dict]) -> dict:
    """One server's readings from every round: the median of each number, the first round's value otherwise."""
    merged = dict(rounds[0])
    for key, value in merged.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(r[key] for r in rounds)
    return merged


def nearest(name: str) -> str:
    """llama.cpp's type nearest ingot's ``FORMAT[:ACTIVATION_DTYPE]``."""
    return NEAREST[name.partition(":")[0]]


def markdown(results: dict) -> str:
    settings = results["settings"]
    ingot, llama = results["ingot"], results["llama-server"]
    lines = [
        f"{results['model']}: kv-cache-gb {settings['kv_cache_gb']} (ingot's KV cache {settings['kv_cache_dtype']}, "
        f"llama-server's {settings['llama_kv_type']}), prefill {settings['prefill_tokens']} tokens, {settings['streams']} "
        f"streams of {settings['stream_input_len']}+{settings['stream_output_len']} tokens, {settings['threads']} threads, "
        f"median of {settings['repeats']}",
        "",
        "| | " + " | ".join(f"ingot {f} / llama.cpp {nearest(f)}" for f in ingot) + " |",
        "|---|" + "---|" * len(ingot),
    ]
    for label, key, scale, form in SPEED_ROWS + MEMORY_ROWS:
        cells = []
        for name, mine in ingot.items():
            theirs = llama.get(nearest(name), {})
            theirs = theirs | {"weight_bytes": theirs.get("gguf_bytes")}  # llama.cpp maps its file
            a, b = mine.get(key), theirs.get(key)
            text = " / ".join(form.format(v / scale) if v is not None else "-" for v in (a, b))
            cells.append(text + (f" = **{a / b:.2f}x**" if a is not None and b else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    best_ingot = max(ingot, key=lambda f: ingot[f]["streams"])
    best_llama = max(llama, key=lambda q: llama[q]["streams"])
    ratio = ingot[best_ingot]["streams"] / llama[best_llama]["streams"]
    lines += ["", f"Best streams: ingot {best_ingot} {ingot[best_ingot]['streams']:.1f} tok/s vs llama-server "
              f"{best_llama} {llama[best_llama]['streams']:.1f} tok/s = **{ratio:.2f}x**"]  # fmt: skip
    if "transformers" in results:
        rate = results["transformers"]
        lines.append(f"Best streams against transformers' batched generate in float32 ({rate:.1f} tok/s): "
                     f"**{ingot[best_ingot]['streams'] / rate:.2f}x**")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="smollm2-135m, a Hugging Face directory, or a shape (llama-3.2-1b, ...)")
    parser.add_argument("--work-dir", type=Path, required=True, help="models, GGUFs and the artifacts (DIR/cache)")
    parser.add_argument("--formats", default="bf16,bfp8,bfp4", help="ingot --weight-format values (FORMAT[:bf16])")
    parser.add_argument("--llama-types", default="BF16,Q8_0,Q4_1", help="llama.cpp tensor types (F32 is the source)")
    parser.add_argument("--kv-cache-dtype", default="bf16", help="ingot's --kv-cache-dtype")
    parser.add_argument("--no-transformers", action="store_true", help="skip transformers' batched generate")
    add_workload_arguments(parser)
    args = parser.parse_args()
    if not args.llama_server.is_file():
        parser.error(f"no llama-server at {args.llama_server}: build it with bench/build_llama_server.sh")
    formats = args.formats.split(",")
    unknown = [f for f in formats if f.partition(":")[0] not in NEAREST or f.partition(":")[2] not in ("", "bf16")]
    if unknown:
        parser.error(f"--formats: {', '.join(unknown)}: FORMAT or FORMAT:bf16, FORMAT one of {', '.join(NEAREST)}")

    from transformers import AutoTokenizer

    args.work_dir.mkdir(parents=True, exist_ok=True)
    model, f32 = prepare_model(args.model, args.work_dir)
    ggufs = {quant: llama_gguf(f32, quant) for quant in args.llama_types.split(",")}
    artifacts = {}
    for name in formats:
        weight_format, _, activation_dtype = name.partition(":")
        options = ["--weight-format", weight_format, "--kv-cache-dtype", args.kv_cache_dtype]
        if activation_dtype:
            options += ["--activation-dtype", activation_dtype]
        if weight_format != "fp32":  # fp32 must match the reference; ingot compile refuses the flag with it
            options.append("--allow-low-accuracy")
        artifacts[name] = compile_cold(model, args.work_dir / "cache", options)
        print(f"{name}: {artifacts[name]['path']}")
    tokenizer = AutoTokenizer.from_pretrained(Path(next(iter(artifacts.values()))["path"]) / "tokenizer")
    results: dict = {
        "model": args.model,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "ingot": {},
        "llama-server": {},
    }
    once = argparse.Namespace(**vars(args) | {"repeats": 1})
    rounds: dict[str, dict[str, list[dict]]] = {"ingot": {}, "llama-server": {}}
    for round_index in range(args.repeats):
        for name, artifact in artifacts.items():
            rounds["ingot"].setdefault(name, []).append(bench_ingot(artifact, tokenizer, once))
        context = max(runs[0]["kv_cache_tokens"] for runs in rounds["ingot"].values())
        for quant, path in ggufs.items():
            rounds["llama-server"].setdefault(quant, []).append(bench_llama_server(path, context, tokenizer, once))
        for side, servers in rounds.items():
            for name, runs in servers.items():
                print(f"round {round_index + 1}", side, name,
                      {k: round(runs[-1][k], 1) for k in ("decode_b1", "prefill", "streams")}, flush=True)  # fmt: skip
    for side, servers in rounds.items():
        results[side] = {name: median_of_rounds(runs) for name, runs in servers.items()}
    if not args.no_transformers:
        results["transformers"] = bench_transformers_batched(next(iter(artifacts.values())), tokenizer, args)
        print("transformers batched generate", results["transformers"], flush=True)
    table = markdown(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
