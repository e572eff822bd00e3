"""Benchmark results with vLLM's `bench serve` definitions, so numbers compare across servers.

TTFT: request sent -> first token. TPOT: (e2e - TTFT) / (output tokens - 1), per request.
ITL: every gap between streamed chunks, over all requests. E2EL: request sent -> last token.
Throughputs divide by the wall time of the whole run.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RequestRecord:
    prompt_tokens: int
    output_tokens: int = 0
    ttft: float = 0.0
    e2el: float = 0.0
    itl: list[float] = field(default_factory=list)
    error: str | None = None
    replica: str | None = None  # which replica answered, when the server says (ingot's replicas on Ray Serve do)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "p90": 0.0, "p99": 0.0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return {"median": statistics.median(ordered), "p90": at(0.90), "p99": at(0.99)}


def summarize(records: list[RequestRecord], duration: float, settings: dict) -> dict:
    ok = [r for r in records if r.error is None]
    output_tokens = sum(r.output_tokens for r in ok)
    prompt_tokens = sum(r.prompt_tokens for r in ok)
    ms = lambda values: {k: v * 1000 for k, v in _percentiles(values).items()}  # noqa: E731
    return {
        "settings": settings,
        "requests": len(records),
        "failures": len(records) - len(ok),
        "errors": sorted({r.error for r in records if r.error})[:5],
        "duration_s": duration,
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "request_throughput": len(ok) / duration if duration else 0.0,
        "output_throughput": output_tokens / duration if duration else 0.0,
        "total_token_throughput": (prompt_tokens + output_tokens) / duration if duration else 0.0,
        "ttft_ms": ms([r.ttft for r in ok]),
        "tpot_ms": ms([(r.e2el - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]),
        "itl_ms": ms([gap for r in ok for gap in r.itl]),
        "e2el_ms": ms([r.e2el for r in ok]),
    }


def write_json(summary: dict, path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2) + "\n")


def format_summary(summary: dict) -> str:
    settings = summary["settings"]
    lines = []
    if "weight_format" in settings:  # an ingot artifact's (a server's only when it says)
        line = f"artifact {settings.get('artifact', '?')}  weights {settings['weight_format']}"
        lines.append(line + (f"  activations {settings['activation_dtype']}" if "activation_dtype" in settings else ""))
    lines += [
        f"requests {summary['requests']}  failures {summary['failures']}  duration {summary['duration_s']:.2f} s",
        f"output throughput {summary['output_throughput']:.1f} tok/s  total {summary['total_token_throughput']:.1f} tok/s"
        f"  requests {summary['request_throughput']:.2f}/s",
    ]
    for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
        p = summary[name]
        lines.append(f"{name[:-3].upper():<5} median {p['median']:9.1f} ms   p90 {p['p90']:9.1f} ms   p99 {p['p99']:9.1f} ms")
    if summary["errors"]:
        lines.append("errors: " + "; ".join(summary["errors"]))
    return "\n".join(lines)
