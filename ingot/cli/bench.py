"""`ingot bench offline|online`: one workload, vLLM's metrics, printed and written as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from ingot.benchmark.report import format_summary, summarize, write_json
from ingot.benchmark.workload import fixed_text_prompts, random_token_prompts
from ingot.cli.locate import find_artifact, open_store


def add_parsers(commands: argparse._SubParsersAction, cache_dir: argparse.ArgumentParser) -> None:
    bench = commands.add_parser("bench", help="measure throughput and latency (offline engine or online server)")
    modes = bench.add_subparsers(dest="mode", required=True)
    workload = argparse.ArgumentParser(add_help=False)
    workload.add_argument("--num-prompts", type=int, default=32)
    workload.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    workload.add_argument("--input-len", type=int, default=128)
    workload.add_argument("--output-len", type=int, default=128)
    workload.add_argument("--dataset", choices=("random", "text"), default="random",
                          help="random tokens, or windows of a fixed English text")
    workload.add_argument("--seed", type=int, default=0)
    workload.add_argument("--json", type=Path, help="write the result here")

    offline = modes.add_parser("offline", parents=[cache_dir, workload], help="drive the engine in this process")
    offline.add_argument("artifact", help="artifact key, key prefix or path")
    offline.add_argument("--kv-cache-gb", type=float)
    offline.set_defaults(handler=cmd_bench)

    online = modes.add_parser("online", parents=[cache_dir, workload], help="stream from an OpenAI-compatible server")
    online.add_argument("--base-url", default="http://127.0.0.1:8000")
    online.add_argument("--endpoint", default="/v1/completions", choices=("/v1/completions", "/v1/chat/completions"))
    online.add_argument("--model", required=True, help="model name the server serves")
    online.add_argument("--tokenizer", required=True, help="artifact key/path whose tokenizer builds the prompts")
    online.add_argument("--api-key")
    online.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    from ingot.artifacts.integrity import check_artifact

    path = find_artifact(open_store(args), args.artifact if args.mode == "offline" else args.tokenizer)
    manifest = check_artifact(path)
    tokenizer = AutoTokenizer.from_pretrained(path / manifest.tokenizer.directory)
    if args.dataset == "random":
        prompts = random_token_prompts(tokenizer, args.num_prompts, args.input_len, args.seed)
    else:
        prompts = fixed_text_prompts(tokenizer, args.num_prompts, args.input_len)
    settings = {k: v for k, v in vars(args).items() if k not in ("handler", "json", "cache_dir") and v is not None}
    if args.mode == "offline":
        settings |= {
            "artifact": manifest.key,
            "weight_format": manifest.options.get("weight_format", "fp32"),
            "activation_dtype": manifest.options.get("activation_dtype", "fp32"),
        }
    else:
        from ingot.benchmark.online import served_metadata

        served = served_metadata(args.base_url, args.model, args.api_key)
        shown = ("artifact", "weight_format", "activation_dtype")
        settings |= {name: served[name] for name in shown if served.get(name)}
    if args.mode == "offline":
        from ingot.benchmark.offline import run_offline
        from ingot.runtime.engine import Engine

        engine = Engine(path, manifest, kv_cache_gb=args.kv_cache_gb)
        try:
            records, duration = asyncio.run(run_offline(engine, prompts, args.output_len, args.concurrency))
        finally:
            engine.shutdown()
    else:
        from ingot.benchmark.online import run_online

        texts = [(tokenizer.decode(p), len(p)) for p in prompts]
        records, duration = asyncio.run(
            run_online(args.base_url, args.endpoint, args.model, texts, args.output_len, args.concurrency, args.api_key)
        )
    summary = summarize(records, duration, settings)
    print(format_summary(summary))
    if args.json:
        write_json(summary, args.json)
    else:
        print(json.dumps(summary))
