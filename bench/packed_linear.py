"""ingot's packed_linear kernel against oneDNN's product on its own prepacked weights (what a frozen program
runs), on the matrix products of a model's steps: per layer q/k/v, o, gate/up and down, the projections of one
input concatenated as the programs have them, then the vocabulary projection. The two alternate step by step in
one process; a time ratio below 1 is packed_linear faster. Weights of ``--layers`` layers, each its own tensors,
so that at decode's few rows they come from memory as in a real step, not from cache. ``--format`` stores
packed_linear's weights in one of Tenstorrent's formats (oneDNN's stay float32: what a float32 artifact runs);
``--bf16-inputs`` adds packed_linear with its inputs rounded to bfloat16 (AVX512-BF16 products), ratio to oneDNN's.

A step of up to 32 rows is a decode step: every row gets logits. A larger one is prefill of prompts of up to 512
tokens (1024 rows: two prompts), which needs logits only for each prompt's last token.

    python bench/packed_linear.py [--model smollm2-135m|llama-3.2-1b] [--format fp32|bf16|bfp8|bfp4]
        [--bf16-inputs] [--layers N] [--steps N] [--threads N] [ROWS ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ingot.artifacts.weight_format import WeightFormat
from ingot.compile.cpu.packed_linears import pack_linear_weight
from ingot.compile.kernels import build_kernels
from ingot.sizes import ceil_div

DECODE_ROWS = 32
PROMPT_TOKENS = 512


@dataclass(frozen=True)
class Model:
    hidden: int
    intermediate: int
    kv_width: int  # key/value heads x head dim
    vocab: int
    layers: int

    def layer(self) -> dict[str, tuple[int, int]]:
        """The products of one layer: name -> (out features, in features)."""
        return {
            "qkv": (self.hidden + 2 * self.kv_width, self.hidden),
            "o": (self.hidden, self.hidden),
            "gate_up": (2 * self.intermediate, self.hidden),
            "down": (self.hidden, self.intermediate),
        }


MODELS = {
    "smollm2-135m": Model(hidden=576, intermediate=1536, kv_width=3 * 64, vocab=49152, layers=30),
    "llama-3.2-1b": Model(hidden=2048, intermediate=8192, kv_width=8 * 64, vocab=128256, layers=16),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", type=int, nargs="*", default=[1, 8, 32, 128, 512])
    parser.add_argument("--model", choices=MODELS, default="smollm2-135m")
    parser.add_argument("--format", choices=[f.value for f in WeightFormat], default="fp32",
                        help="packed_linear's weight format")  # fmt: skip
    parser.add_argument("--bf16-inputs", action="store_true", help="also packed_linear with bfloat16 inputs")
    parser.add_argument("--layers", type=int, help="layers of weights (default: all of the model's)")
    parser.add_argument("--steps", type=int, default=6, help="steps of each variant, alternating")
    parser.add_argument("--threads", type=int, help="threads of both (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    build_kernels()
    model = MODELS[args.model]
    layers = args.layers or model.layers
    shapes = {**model.layer(), "lm_head": (model.vocab, model.hidden)}
    weights = [{name: torch.randn(n, k) for name, (n, k) in shapes.items()} for _ in range(layers)]
    for layer in weights[:-1]:
        del layer["lm_head"]  # one vocabulary projection, after the last layer
    fmt = WeightFormat(args.format)
    packed = [{name: (pack_linear_weight(w, fmt), w.shape[0]) for name, w in layer.items()} for layer in weights]
    print(
        f"{args.model}, {layers} layers, packed_linear weights in {fmt.value}, {torch.get_num_threads()} threads; "
        f"time per step, median of {args.steps}"
    )
    for rows in args.rows:
        head_rows = rows if rows <= DECODE_ROWS else ceil_div(rows, PROMPT_TOKENS)
        inputs = {name: torch.randn(head_rows if name == "lm_head" else rows, k) for name, (_, k) in shapes.items()}
        onednn = [{name: _onednn_weight(w, len(inputs[name])) for name, w in layer.items()} for layer in weights]
        variants = {
            "oneDNN": lambda x, weight: torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [None], ""),
            "packed_linear": lambda x, weight: torch.ops.ingot.packed_linear(x, *weight, None, fmt.value),
        }
        if args.bf16_inputs:
            variants["bf16 inputs"] = lambda x, weight: torch.ops.ingot.packed_linear(x, *weight, None, fmt.value, True)
        times = {variant: defaultdict(list) for variant in variants}
        for _ in range(args.steps):
            for variant, product in variants.items():
                step_weights = onednn if variant == "oneDNN" else packed
                for name, seconds in _step(product, step_weights, inputs).items():
                    times[variant][name].append(seconds)
        flop = {name: 2 * len(x) * shapes[name][0] * shapes[name][1] for name, x in inputs.items()}
        flop = {name: count * (1 if name == "lm_head" else layers) for name, count in flop.items()}
        flop["step"] = sum(flop.values())
        print(f"{rows} rows (lm_head {head_rows}):")
        for name, count in flop.items():
            ms = {variant: statistics.median(times[variant][name]) * 1e3 for variant in variants}
            cells = [f"{variant} {t:8.2f} ms ({count / t / 1e6:4.0f} GFLOP/s)" for variant, t in ms.items()]
            ratios = [f"{t / ms['oneDNN']:.3f}" for variant, t in ms.items() if variant != "oneDNN"]
            print(f"  {name:8s} " + "  ".join(cells) + f"  time ratio {' / '.join(ratios)}", flush=True)


def _step(product: Callable, weights: list[dict], inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """One step's products, layer by layer; the seconds each kind of product took, and the whole step's."""
    spent: dict[str, float] = defaultdict(float)
    for layer in weights:
        for name, weight in layer.items():
            start = time.perf_counter()
            product(inputs[name], weight)
            spent[name] += time.perf_counter() - start
    spent["step"] = sum(spent.values())
    return spent


def _onednn_weight(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """Prepacked for oneDNN as a frozen program has it, for a product of ``rows`` rows."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, rows)


if __name__ == "__main__":
    main()
