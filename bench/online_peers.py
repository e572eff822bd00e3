"""Online serving, one server at a time on the same cores: `ingot serve` vs llama-cpp-python's server.

    python bench/online_peers.py --artifact KEY [--concurrency 1 8 32] [--json bench/online-results.json]

Each server gets the same random-token prompts through `ingot bench online` (/v1/completions,
streaming) at each concurrency. llama.cpp serves the demo GGUF dequantized to F32, the weights
ingot's artifact holds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ingot.models.source import builtin_model_path

sys.path.insert(0, str(Path(__file__).parent))
from peers import dequantized_f32  # noqa: E402

MODEL = "smollm2-135m"


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(url)


def bench(port: int, artifact: str, args) -> dict:
    results = {}
    for concurrency in args.concurrency:
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        subprocess.run(
            [sys.executable, "-m", "ingot.cli", "bench", "online", "--base-url", f"http://127.0.0.1:{port}",
             "--model", MODEL, "--tokenizer", artifact, "--num-prompts", str(args.num_prompts),
             "--concurrency", str(concurrency), "--input-len", str(args.input_len),
             "--output-len", str(args.output_len), "--json", str(out)],
            check=True,
        )
        results[concurrency] = json.loads(out.read_text())
    return results


def serve(command: list[str], port: int, ready_path: str, artifact: str, args) -> dict:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}{ready_path}", process)
        return bench(port, artifact, args)
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", required=True, help="the compiled smollm2-135m artifact")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    results = {"ingot serve": serve(
        [sys.executable, "-m", "ingot.cli", "serve", args.artifact, "--port", "8101", "--no-compile"],
        8101, "/health", args.artifact, args,
    )}
    with tempfile.TemporaryDirectory() as tmp:
        gguf = dequantized_f32(builtin_model_path(MODEL), Path(tmp))
        results["llama-cpp-python server F32"] = serve(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL,
             "--host", "127.0.0.1", "--port", "8102", "--n_threads", str(args.threads),
             "--n_threads_batch", str(args.threads), "--n_ctx", "2048"],
            8102, "/v1/models", args.artifact, args,
        )

    print(f"{'':30} {'conc':>4} {'out tok/s':>10} {'TTFT med ms':>12} {'TPOT med ms':>12} {'fail':>5}")
    for name, by_concurrency in results.items():
        for concurrency, r in by_concurrency.items():
            print(f"{name:30} {concurrency:>4} {r['output_throughput']:>10.1f} {r['ttft_ms']['median']:>12.1f} "
                  f"{r['tpot_ms']['median']:>12.1f} {r['failures']:>5}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
