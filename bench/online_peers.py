"""Online serving, one server at a time on the same cores: `ingot serve` vs llama.cpp's `llama-server`.

    python bench/online_peers.py --artifact KEY|PATH [--concurrency 1 8 32] [--json bench/online-results.json]

Each server gets the same random-token prompts through `ingot bench online` (/v1/completions,
streaming) at each concurrency, after one untimed run at the highest, and each run its own prompts: a
server's prompt cache (ingot's prefix cache, llama-server's slots) never serves a run from prompts an
earlier run left in it.
llama-server (built by bench/build_llama_server.sh) runs with one slot per request in flight at the
highest concurrency, and serves the demo GGUF twice: dequantized to F32 (the weights ingot's
artifact holds) and as shipped (Q4_1).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ingot.benchmark.launch import running
from ingot.models.source import builtin_model_path

sys.path.insert(0, str(Path(__file__).parent))
from peers import dequantized_f32  # noqa: E402

MODEL = "smollm2-135m"
LLAMA_SERVER = Path("/work/shared/llama-server/llama-server")


def slot_tokens(input_len: int, output_len: int) -> int:
    """What a llama-server slot holds for one request: its prompt, re-tokenized from text (up to ~10% longer than
    random tokens' count, so 25% spare), and its output."""
    return input_len * 5 // 4 + output_len + 16


def llama_server_command(
    binary: Path, gguf: Path, port: int, slots: int, context: int, threads: int, alias: str = MODEL,
    kv_type: str | None = None,
) -> list[str]:
    """llama-server serving ``gguf`` as ``alias`` on 127.0.0.1: ``slots`` requests at once, sharing ``context``
    tokens of KV cache (of ``kv_type``; None: llama-server's default, f16)."""
    command = [
        str(binary), "--model", str(gguf), "--alias", alias, "--host", "127.0.0.1", "--port", str(port),
        "--threads", str(threads), "--threads-batch", str(threads), "--parallel", str(slots), "--ctx-size", str(context),
    ]  # fmt: skip
    if kv_type is not None:
        command += ["--cache-type-k", kv_type, "--cache-type-v", kv_type]
    return command


def bench(port: int, artifact: str, args) -> dict:
    """Each concurrency once, after one untimed run at the highest: a server's first run at a batch size pays for
    what later ones reuse (memory, the math libraries' state for its shapes), once, not on every workload."""
    def run(concurrency: int, seed: int) -> dict:
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        subprocess.run(
            [sys.executable, "-m", "ingot.cli", "bench", "online", "--base-url", f"http://127.0.0.1:{port}",
             "--model", MODEL, "--tokenizer", artifact, "--num-prompts", str(args.num_prompts),
             "--concurrency", str(concurrency), "--input-len", str(args.input_len),
             "--output-len", str(args.output_len), "--seed", str(seed), "--json", str(out)],
            check=True,
        )
        return json.loads(out.read_text())

    run(max(args.concurrency), seed=0)  # its own prompts: no prompt cache serves a timed run from it
    return {concurrency: run(concurrency, seed=concurrency) for concurrency in args.concurrency}


def serve(command: list[str], port: int, artifact: str, args) -> dict:
    with running(command, port):
        return bench(port, artifact, args)


def llama_server(gguf: Path, port: int, args) -> list[str]:
    """One slot per request in flight at the highest concurrency."""
    slots = max(args.concurrency)
    context = slots * slot_tokens(args.input_len, args.output_len)
    return llama_server_command(args.llama_server, gguf, port, slots, context, args.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", required=True, help="the compiled smollm2-135m artifact (key or path)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llama-server", type=Path, default=LLAMA_SERVER, help="llama.cpp's llama-server binary")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.llama_server.is_file():
        parser.error(f"no llama-server binary at {args.llama_server}: build it with bench/build_llama_server.sh "
                     "or pass --llama-server PATH")

    results = {"ingot serve": serve(
        [sys.executable, "-m", "ingot.cli", "serve", args.artifact, "--port", "8101", "--no-compile"],
        8101, args.artifact, args,
    )}
    shipped = builtin_model_path(MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        f32 = dequantized_f32(shipped, Path(tmp))
        results["llama-server F32"] = serve(llama_server(f32, 8102, args), 8102, args.artifact, args)
    results["llama-server Q4_1"] = serve(llama_server(shipped, 8103, args), 8103, args.artifact, args)

    print(f"{'':30} {'conc':>4} {'out tok/s':>10} {'TTFT med ms':>12} {'TPOT med ms':>12} {'fail':>5}")
    for name, by_concurrency in results.items():
        for concurrency, r in by_concurrency.items():
            print(f"{name:30} {concurrency:>4} {r['output_throughput']:>10.1f} {r['ttft_ms']['median']:>12.1f} "
                  f"{r['tpot_ms']['median']:>12.1f} {r['failures']:>5}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
