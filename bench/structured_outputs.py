"""Structured outputs at --streams concurrent streams: ingot with a JSON schema on every request against the same run
without, and llama.cpp's llama-server on the same workload (its own JSON-schema support), one server at a time.

    python bench/structured_outputs.py --artifact KEY|PATH [--llama-server PATH] [--streams 32] [--output-len 128]
        [--repeats 3] [--threads 2] [--json FILE]

--artifact is the compiled demo model (smollm2-135m); llama-server (bench/build_llama_server.sh) serves the demo GGUF
dequantized to F32 (``ingot.benchmark.gguf_f32``), the weights ingot's artifact holds, with one slot per stream.

Workload: --streams chat requests at once (/v1/chat/completions, streaming, greedy), each asking in its own words for
a customer record, --output-len tokens each. With a schema (ingot: ``response_format`` json_schema; llama-server: its
``json_schema`` field) the record is a nested object with an enum and an array (``schema()``); the array must hold
more enum items than --output-len tokens can write, so every constrained output runs to --output-len tokens, as the
unconstrained ones do with ``ignore_eos``: both runs generate the same tokens per request, and their output tokens/s
differ by what the constraint costs. Every run gets prompts of its own (no prompt cache serves one run from another);
each variant runs once untimed, then --repeats times alternating, and the median is reported.

Schema compile time: on a server that has not seen the schema, one request of one output token without a schema,
then the same with the schema twice (the first compiles it, the second finds it in ingot's cache; llama-server
converts a schema on every request): the latency of each.

Needs a quiet machine: the figures go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ingot.benchmark.launch import free_port, running
from ingot.benchmark.online import run_online
from ingot.benchmark.report import summarize
from ingot.models.source import builtin_model_path

sys.path.insert(0, str(Path(__file__).parent))
from online_peers import LLAMA_SERVER, MODEL, llama_server_command, slot_tokens

PROMPT_TOKENS = 96  # at most, a request's chat-templated prompt (for llama-server's slots)


def schema(output_len: int) -> dict:
    """A customer record: a nested object, an enum, and an array of enum items that a record cannot close within
    ``output_len`` tokens (an item and its separator take two tokens at least)."""
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "role": {"enum": ["admin", "customer", "guest"]},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 24}, "country": {"enum": ["NO", "PE", "FR"]}},
                "required": ["city", "country"],
                "additionalProperties": False,
            },
            "tags": {"type": "array", "items": {"enum": ["new", "vip", "eu", "us"]}, "minItems": output_len // 2 + 1},
        },
        "required": ["name", "role", "address", "tags"],
        "additionalProperties": False,
    }


def schema_fields(server: str, schema: dict) -> dict:
    """The request fields that constrain the output to ``schema`` on ``server`` ("ingot" or "llama-server")."""
    if server == "ingot":
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "customer", "schema": schema}}}
    return {"json_schema": schema}


def prompts(run: int, count: int) -> list[tuple[str, int]]:
    """``count`` requests of their own for run ``run`` (token counts come from the server's usage)."""
    ask = "write the record of customer number {i} of our web shop as JSON: name, role, address and tags."
    return [(f"Ticket {run}-{i}: " + ask.format(i=i), 0) for i in range(count)]


def model_name(url: str) -> str:
    return httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]


class Runs:
    """The workload against one server, with and without the schema."""

    def __init__(self, server: str, url: str, args: argparse.Namespace) -> None:
        self.server = server
        self.url = url
        self.model = model_name(url)
        self.args = args
        self.runs = 0
        self.constrained = schema_fields(server, schema(args.output_len)) | {"ignore_eos": False}

    def compile_times(self) -> dict:
        """Latency (ms) of a one-token request: without the schema, then with it for the first and second time."""

        def latency(extra: dict) -> float:
            self.runs += 1
            body = {
                "model": self.model, "messages": [{"role": "user", "content": prompts(self.runs, 1)[0][0]}],
                "max_tokens": 1, "temperature": 0, **extra,
            }  # fmt: skip
            start = time.perf_counter()
            response = httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=600)
            response.raise_for_status()
            return (time.perf_counter() - start) * 1000

        latency({})  # the server's first request: whatever it does once, it does not do in the figures
        return {
            "no_schema_ms": latency({}),
            "first_schema_ms": latency(self.constrained),
            "cached_schema_ms": latency(self.constrained),
        }

    def check_constrained(self) -> None:
        """One whole constrained output: the schema's record, cut by max_tokens (else the server ignored the schema,
        or the runs' outputs would differ in length)."""
        body = {
            "model": self.model, "messages": [{"role": "user", "content": prompts(0, 1)[0][0]}],
            "max_tokens": self.args.output_len, "temperature": 0, **self.constrained,
        }  # fmt: skip
        choice = httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=600).json()["choices"][0]
        text = choice["message"]["content"]
        if not (text.lstrip().startswith("{") and '"name"' in text and choice["finish_reason"] == "length"):
            raise RuntimeError(f"{self.server} did not follow the schema: {choice}")

    def throughput(self, constrained: bool) -> dict:
        """One run of --streams requests at once."""
        self.runs += 1
        args = self.args
        records, duration = asyncio.run(
            run_online(
                self.url, "/v1/chat/completions", self.model, prompts(self.runs, args.streams), args.output_len,
                concurrency=args.streams, extra_body=self.constrained if constrained else None,
            )
        )  # fmt: skip
        summary = summarize(records, duration, {})
        if summary["failures"]:
            raise RuntimeError(f"{summary['failures']} requests failed: {summary['errors']}")
        return summary

    def measure(self) -> dict:
        result = self.compile_times()
        self.check_constrained()
        self.throughput(constrained=False)
        self.throughput(constrained=True)
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(self.args.repeats):
            for constrained in (False, True):
                runs[constrained].append(self.throughput(constrained))
        for constrained, label in ((True, "schema"), (False, "no_schema")):
            result[f"{label}_output_tok_s"] = statistics.median(r["output_throughput"] for r in runs[constrained])
            result[f"{label}_tokens_per_request"] = statistics.median(
                r["output_tokens"] / r["requests"] for r in runs[constrained]
            )
        result["schema_vs_no_schema"] = result["schema_output_tok_s"] / result["no_schema_output_tok_s"]
        return result


def bench_ingot(args: argparse.Namespace) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "ingot.cli", "serve", args.artifact, "--no-compile", "--port", str(port)]
    with running(command, port):
        return Runs("ingot", f"http://127.0.0.1:{port}", args).measure()


def bench_llama_server(args: argparse.Namespace) -> dict:
    from ingot.benchmark.gguf_f32 import dequantized_gguf

    with tempfile.TemporaryDirectory() as work:
        gguf = dequantized_gguf(builtin_model_path(MODEL), Path(work) / f"{MODEL}-f32.gguf")
        port = free_port()
        context = args.streams * slot_tokens(PROMPT_TOKENS, args.output_len)
        command = llama_server_command(args.llama_server, gguf, port, args.streams, context, args.threads)
        with running(command, port):
            return Runs("llama-server", f"http://127.0.0.1:{port}", args).measure()


COLUMNS = [  # (heading, key, format)
    ("schema tok/s", "schema_output_tok_s", "{:.1f}"),
    ("none tok/s", "no_schema_output_tok_s", "{:.1f}"),
    ("ratio", "schema_vs_no_schema", "{:.2f}x"),
    ("schema tok/req", "schema_tokens_per_request", "{:.0f}"),
    ("none tok/req", "no_schema_tokens_per_request", "{:.0f}"),
    ("none ms", "no_schema_ms", "{:.0f}"),
    ("1st schema ms", "first_schema_ms", "{:.0f}"),
    ("cached ms", "cached_schema_ms", "{:.0f}"),
]


def table(results: dict) -> str:
    lines = [f"{'':18}" + "".join(f"{heading:>15}" for heading, _, _ in COLUMNS)]
    for name, result in results.items():
        lines.append(f"{name:18}" + "".join(f"{form.format(result[key]):>15}" for _, key, form in COLUMNS))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", required=True, help="the compiled smollm2-135m artifact (key or path)")
    parser.add_argument("--llama-server", type=Path, default=LLAMA_SERVER, help="llama.cpp's llama-server binary")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="llama-server's threads")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.llama_server.is_file():
        parser.error(f"no llama-server at {args.llama_server}: build it with bench/build_llama_server.sh")

    results = {"ingot serve": bench_ingot(args), "llama-server F32": bench_llama_server(args)}
    print(f"{args.streams} streams of {args.output_len} tokens, median of {args.repeats}")
    print(table(results))
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"settings": settings, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
