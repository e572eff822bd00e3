"""Normal streams beside adversarial requests: one request must never hurt another.

    python bench/adversarial_load.py --artifact KEY|PATH [--detector KEY|PATH] [--rounds 2] [--json out.json]

Starts `ingot serve` on 127.0.0.1 with the language-model artifact (and a YOLOv4 artifact for the image bombs),
then alternates two phases per round: 16 normal streaming completions alone, and the same 16 while adversaries
send, over and over until the normal streams end, each kind of request the hardening issue names:
- sampling parameters that once broke the sampler (temperature 1e308 with min_p, NaN-producing combinations);
- the biggest allowed stop list (--max-stop-sequences strings) and logit_bias (--max-logit-bias entries), streamed;
- the largest body the server accepts (--max-request-bytes of one-character prompts);
- decompression bombs to /v1/detections (a tiny PNG declaring 9400 x 9400), eight at a time;
- slow bodies (one byte every 2 s) that hold a connection open.
It reports, per phase, failed normal streams and the median inter-token latency of the normal streams, and the
ratio of the two phases' medians (the target: no failure, <= 1.5x), plus what each adversary got back and the
server's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import psutil

from ingot.benchmark.launch import free_port
from ingot.benchmark.online import run_online

NORMAL_STREAMS = 16
STOPS = 4  # the server's defaults: OpenAI's limits
LOGIT_BIAS = 300
MAX_REQUEST_BYTES = 4 * 2**20


def png_bomb(side: int = 9400) -> bytes:
    """A valid PNG header declaring side x side RGB pixels, followed by a short compressed stream of zeros."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side * 3 + 1) * 64, 9)  # 64 rows: the rest is missing
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


async def adversaries(base: str, model: str, detector: str | None, stop: asyncio.Event, counts: dict) -> None:
    """Send every kind of adversarial request, round after round, until ``stop`` is set."""
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(120.0)) as client:

        def record(kind: str, status: int | str) -> None:
            counts.setdefault(kind, {}).setdefault(str(status), 0)
            counts[kind][str(status)] += 1

        async def post(kind: str, path: str, **kwargs) -> None:
            try:
                response = await client.post(path, **kwargs)
                record(kind, response.status_code)
            except httpx.HTTPError as error:
                record(kind, type(error).__name__)

        async def stream(kind: str, body: dict) -> None:
            try:
                async with client.stream("POST", "/v1/completions", json=body) as response:
                    async for _ in response.aiter_lines():
                        pass
                    record(kind, response.status_code)
            except httpx.HTTPError as error:
                record(kind, type(error).__name__)

        async def slow_body() -> None:
            """Headers that promise a body, then one byte every 2 s until the server gives up on it."""
            host, port = base.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                "Content-Length: 100000\r\n\r\n".encode()
            )
            status = "held"
            try:
                for _ in range(30):
                    if stop.is_set():
                        break
                    writer.write(b" ")
                    await writer.drain()
                    try:
                        line = await asyncio.wait_for(reader.readline(), 2.0)
                    except asyncio.TimeoutError:
                        continue
                    status = line.split()[1].decode() if line.startswith(b"HTTP/") else "closed"
                    break
            except OSError:
                status = "closed"
            finally:
                writer.close()
            record("slow body", status)

        base_body = {"model": model, "prompt": "Tell me a story", "max_tokens": 32, "stream": True}
        largest = json.dumps({"model": model, "prompt": ["a"] * ((MAX_REQUEST_BYTES - 100) // 4), "max_tokens": 1})
        slow = asyncio.create_task(slow_body())
        while not stop.is_set():
            jobs = [
                post("temperature 1e308 + min_p", "/v1/completions",
                     json={"model": model, "prompt": "Hi", "max_tokens": 8, "temperature": 1e308, "min_p": 0.5}),
                post("top_p tiny + huge penalties", "/v1/completions",
                     json={"model": model, "prompt": "Hi", "max_tokens": 8, "temperature": 1e-3, "top_p": 1e-45,
                           "presence_penalty": 2, "frequency_penalty": -2, "repetition_penalty": 1e30}),
                stream("biggest stop list", base_body | {"stop": ["x" * 64 + str(i) for i in range(STOPS)]}),
                stream("biggest logit_bias", base_body | {"logit_bias": {str(i): 1.0 for i in range(LOGIT_BIAS)}}),
                post("largest body", "/v1/completions", content=largest,
                     headers={"Content-Type": "application/json"}),
            ]
            if detector:
                bomb = png_bomb()
                jobs += [
                    post("image bomb", "/v1/detections", data={"model": detector},
                         files={"image": ("bomb.png", io.BytesIO(bomb), "image/png")})
                    for _ in range(8)
                ]
            await asyncio.gather(*jobs)
            if slow.done():
                slow = asyncio.create_task(slow_body())
        slow.cancel()


async def phase(base: str, model: str, tokenizer: str, detector: str | None, adversarial: bool, seed: int) -> dict:
    from transformers import AutoTokenizer

    from ingot.benchmark.workload import fixed_text_prompts

    tok = AutoTokenizer.from_pretrained(tokenizer)
    prompts = [(tok.decode(ids), len(ids)) for ids in fixed_text_prompts(tok, NORMAL_STREAMS, 128 + seed)]
    stop, counts = asyncio.Event(), {}
    attack = asyncio.create_task(adversaries(base, model, detector, stop, counts)) if adversarial else None
    if attack:
        await asyncio.sleep(1.0)  # the adversaries are in flight before the normal streams start
    records, seconds = await run_online(base, "/v1/completions", model, prompts, 128, NORMAL_STREAMS)
    stop.set()
    if attack:
        await attack
    itl = [gap for r in records if not r.error for gap in r.itl]
    return {
        "adversarial": adversarial,
        "failed": [r.error for r in records if r.error],
        "itl_median_ms": 1000 * statistics.median(itl) if itl else None,
        "seconds": seconds,
        "adversary_statuses": counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", required=True, help="a language-model artifact key or path")
    parser.add_argument("--detector", help="a YOLOv4 artifact key or path (for the image bombs)")
    parser.add_argument("--cache-dir")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    port = free_port()
    env = dict(os.environ) | ({"INGOT_CACHE_DIR": args.cache_dir} if args.cache_dir else {})
    command = [sys.executable, "-m", "ingot.cli", "serve", args.artifact, *([args.detector] if args.detector else []),
               "--no-compile", "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        models = httpx.get(base + "/v1/models").json()["data"]
        model = next(m["id"] for m in models if m["id"] != "yolov4")
        detector = "yolov4" if args.detector else None
        tokenizer = str(_artifact_dir(args.artifact, args.cache_dir) / "tokenizer")
        process = psutil.Process(server.pid)
        results = []
        for round_ in range(args.rounds):
            for adversarial in (False, True):
                result = asyncio.run(phase(base, model, tokenizer, detector, adversarial, round_))
                result["server_rss_gb"] = process.memory_info().rss / 2**30
                results.append(result)
                print(json.dumps(result), flush=True)
        quiet = statistics.median(r["itl_median_ms"] for r in results if not r["adversarial"])
        loud = statistics.median(r["itl_median_ms"] for r in results if r["adversarial"])
        summary = {
            "normal_streams_failed": sum(len(r["failed"]) for r in results),
            "itl_median_ms_alone": quiet,
            "itl_median_ms_with_adversaries": loud,
            "ratio": loud / quiet,
            "server_rss_gb_max": max(r["server_rss_gb"] for r in results),
        }
        print(json.dumps(summary, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps({"summary": summary, "phases": results}, indent=2) + "\n")
    finally:
        server.terminate()
        server.wait(60)


def _artifact_dir(artifact: str, cache_dir: str | None) -> Path:
    from ingot.artifacts.store import ArtifactStore

    return ArtifactStore.open(cache_dir).resolve(artifact)


if __name__ == "__main__":
    main()
