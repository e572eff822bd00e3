"""Replicas on Ray Serve: prefix-aware routing against Ray's default router, and replicas against threads.

    python bench/prefix_routing.py [--model smollm2-135m] [--json bench/prefix-routing-results.json]

Routing (issue 22): 8 shared system prompts x 64 requests each (a question after each), shuffled, 16 in flight, on 2
replicas with one thread each: once with ingot's prefix-aware router, once with Ray Serve's default (power of two
choices). Reported: prefix-cache hit tokens summed over the replicas (their `vllm:prefix_cache_hits`) beside the
prompt tokens looked up, and TTFT, through Ray's proxy; and for each replica, how many requests of each system prompt
it served (the replica a response names) and its own prefix-cache hits: whether a router keeps each replica to its
share of the prompts. bench/routing_simulation.py runs the same workload offline.

Replicas against threads: 32 streams of random-token prompts on 2 replicas with one thread each, then on 1 replica
with two threads: what splitting a host's cores into replicas costs or gains.

Every configuration is a fresh application (cold prefix caches) on one local Ray cluster on 127.0.0.1, measured
with `ingot bench online`'s client and vLLM's definitions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.store import ArtifactStore
from ingot.benchmark.launch import free_port, healthy
from ingot.benchmark.online import run_online
from ingot.benchmark.report import summarize
from ingot.benchmark.workload import fixed_text_prompts, random_token_prompts
from ingot.cli.locate import serving_artifact
from ingot.deploy.prefixes import DEFAULT_IMBALANCE

ENDPOINT = "/v1/completions"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="artifact key or path, or a model (compiled on a miss)")
    parser.add_argument("--cache-dir")
    parser.add_argument("--parts", nargs="+", choices=("routing", "threads"), default=["routing", "threads"])
    routing = parser.add_argument_group("routing")
    routing.add_argument("--system-prompts", type=int, default=8)
    routing.add_argument("--requests-per-prompt", type=int, default=64)
    routing.add_argument("--system-tokens", type=int, default=384, help="each shared system prompt's length")
    routing.add_argument("--question-tokens", type=int, default=32)
    routing.add_argument("--routing-output-len", type=int, default=16)
    routing.add_argument("--routing-concurrency", type=int, default=16)
    routing.add_argument("--imbalance", type=int, default=DEFAULT_IMBALANCE, help="the prefix-aware router's")
    threads = parser.add_argument_group("replicas against threads")
    threads.add_argument("--streams", type=int, default=32)
    threads.add_argument("--stream-requests", type=int, default=96)
    threads.add_argument("--input-len", type=int, default=128)
    threads.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--kv-cache-gb", type=float, default=0.5, help="per replica")
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def routing_prompts(tokenizer, args: argparse.Namespace) -> tuple[list[tuple[str, int]], list[int]]:
    """Each system prompt followed by its questions, all shuffled (a fixed seed): prefixes arrive interleaved. Also
    which system prompt each request starts with."""
    systems = [tokenizer.decode(ids) for ids in fixed_text_prompts(tokenizer, args.system_prompts, args.system_tokens)]
    questions = random_token_prompts(tokenizer, args.system_prompts * args.requests_per_prompt, args.question_tokens, seed=1)
    requests = [
        (s, f"{system}\n\nQuestion: {tokenizer.decode(questions[s * args.requests_per_prompt + q])}")
        for s, system in enumerate(systems)
        for q in range(args.requests_per_prompt)
    ]
    random.Random(0).shuffle(requests)
    return [(text, 0) for _, text in requests], [s for s, _ in requests]


def stream_prompts(tokenizer, args: argparse.Namespace) -> list[tuple[str, int]]:
    ids = random_token_prompts(tokenizer, args.stream_requests, args.input_len, seed=2)
    return [(tokenizer.decode(prompt), len(prompt)) for prompt in ids]


PREFIX_CACHE_COUNTERS = {"vllm:prefix_cache_hits_total": "hits", "vllm:prefix_cache_queries_total": "queries"}


def prefix_cache_counters(url: str) -> dict[str, dict[str, float]]:
    """Each replica's prefix-cache counters (hit and looked-up prompt tokens), by its replica label."""
    counters: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=60).text):
        for sample in family.samples:
            if sample.name in PREFIX_CACHE_COUNTERS:
                replica = counters.setdefault(sample.labels.get("replica", "?"), {"hits": 0.0, "queries": 0.0})
                replica[PREFIX_CACHE_COUNTERS[sample.name]] += sample.value
    return counters


def replica_shares(records, systems: list[int], before: dict, after: dict) -> dict[str, dict]:
    """For each replica: the requests of each system prompt it served, and its prefix-cache hits over the run."""
    shares: dict[str, dict] = {}
    for replica in sorted({r.replica or "?" for r in records} | set(after)):
        start = before.get(replica, {"hits": 0.0, "queries": 0.0})
        end = after.get(replica, start)
        shares[replica] = {
            "requests_by_system_prompt": [0] * (max(systems) + 1),
            "prefix_cache_hit_tokens": end["hits"] - start["hits"],
            "prefix_cache_query_tokens": end["queries"] - start["queries"],
        }
    for record, system in zip(records, systems):
        if record.error is None:
            shares[record.replica or "?"]["requests_by_system_prompt"][system] += 1
    return shares


def run_configuration(
    name: str, options, url: str, model_name: str, prompts, output_len: int, concurrency: int, systems=None
) -> dict:
    """One fresh application through its workload; ``systems``, which system prompt each request starts with, asks
    for each replica's share of them."""
    from ray import serve

    from ingot.deploy.ray import build_app

    started = time.perf_counter()
    serve.run(build_app(options), name=name, route_prefix="/")
    while not healthy(url):
        time.sleep(0.5)
    print(f"{name}: ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    before = prefix_cache_counters(url)
    records, duration = asyncio.run(run_online(url, ENDPOINT, model_name, prompts, output_len, concurrency))
    after = prefix_cache_counters(url)
    serve.delete(name)
    summary = summarize(records, duration, {"configuration": name, "concurrency": concurrency, **options.model_dump()})
    shares = replica_shares(records, systems or [0] * len(records), before, after)
    summary["prefix_cache_hit_tokens"] = sum(share["prefix_cache_hit_tokens"] for share in shares.values())
    summary["prefix_cache_query_tokens"] = sum(share["prefix_cache_query_tokens"] for share in shares.values())
    summary["ttft_mean_ms"] = 1000 * sum(r.ttft for r in records if r.error is None) / max(1, summary["requests"] - summary["failures"])
    print(
        f"{name}: {summary['requests']} requests, {summary['failures']} failed, {duration:.1f} s, "
        f"mean TTFT {summary['ttft_mean_ms']:.1f} ms, prefix-cache hits {summary['prefix_cache_hit_tokens']:.0f} "
        f"of {summary['prefix_cache_query_tokens']:.0f} prompt tokens, output {summary['output_throughput']:.1f} tok/s",
        file=sys.stderr,
    )
    if systems is not None:
        summary["replicas"] = shares
        for replica, share in shares.items():
            counts = " ".join(f"{n:3d}" for n in share["requests_by_system_prompt"])
            hit_share = share["prefix_cache_hit_tokens"] / max(1.0, share["prefix_cache_query_tokens"])
            print(
                f"  replica {replica}: requests of each system prompt [{counts}], prefix-cache hits {hit_share:.0%}",
                file=sys.stderr,
            )
    return summary


def main() -> None:
    args = parse_args()
    import ray
    from ray import serve
    from transformers import AutoTokenizer

    from ingot.deploy.ray import AppOptions, start_cluster

    store = ArtifactStore.open(args.cache_dir)
    path = serving_artifact(store, args.model)
    manifest = check_artifact(path)
    tokenizer = AutoTokenizer.from_pretrained(path / manifest.tokenizer.directory)
    common = {"model": str(path), "cache_dir": str(store.root), "kv_cache_gb": args.kv_cache_gb}

    port = free_port()
    start_cluster("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}"
    results: dict[str, dict] = {}
    try:
        if "routing" in args.parts:
            prompts, systems = routing_prompts(tokenizer, args)
            for router in ("prefix", "default"):
                options = AppOptions(**common, replicas=2, threads=1, router=router, imbalance=args.imbalance)
                results[f"routing-{router}"] = run_configuration(
                    f"routing-{router}", options, url, manifest.model.name, prompts, args.routing_output_len,
                    args.routing_concurrency, systems,
                )
        if "threads" in args.parts:
            prompts = stream_prompts(tokenizer, args)
            for replicas, threads in ((2, 1), (1, 2)):
                name = f"{replicas}-replicas-x-{threads}-threads"
                options = AppOptions(**common, replicas=replicas, threads=threads)
                results[name] = run_configuration(
                    name, options, url, manifest.model.name, prompts, args.output_len, args.streams
                )
    finally:
        serve.shutdown()
        ray.shutdown()
    if "routing-prefix" in results and "routing-default" in results:
        prefix, default = results["routing-prefix"], results["routing-default"]
        hits_ratio = prefix["prefix_cache_hit_tokens"] / max(1.0, default["prefix_cache_hit_tokens"])
        print(
            f"prefix-aware vs default: prefix-cache hit tokens x{hits_ratio:.2f}, mean TTFT "
            f"{prefix['ttft_mean_ms']:.1f} ms vs {default['ttft_mean_ms']:.1f} ms",
            file=sys.stderr,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
