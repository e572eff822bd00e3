"""A/B: fp32 against a compressed format's variants, alternating step by step in one process (1B-like shapes)."""
import os, statistics, sys, time
from collections import defaultdict
import torch
sys.path.insert(0, "/work/wt/rows-kernel/bench")
from packed_linear import MODELS
from ingot.artifacts.weight_format import WeightFormat
from ingot.compile.cpu.packed_linears import pack_linear_weight
from ingot.compile.kernels import build_kernels

model_name, fmt_name = sys.argv[1], sys.argv[2]
variants = sys.argv[3].split(",")  # e.g. 0,1:128,2,3
rows_list = [int(r) for r in sys.argv[4].split(",")]
steps = int(sys.argv[5]) if len(sys.argv) > 5 else 5
layers = int(sys.argv[6]) if len(sys.argv) > 6 else None
build_kernels()
model = MODELS[model_name]
nlayers = layers or model.layers
shapes = {**model.layer(), "lm_head": (model.vocab, model.hidden)}
fmt = WeightFormat(fmt_name)
fp32, packed = [], []
for i in range(nlayers):
    names = list(shapes) if i == nlayers - 1 else [n for n in shapes if n != "lm_head"]
    l32, lf = {}, {}
    for n in names:
        w = torch.randn(*shapes[n])
        l32[n] = (pack_linear_weight(w, WeightFormat.FP32), w.shape[0])
        lf[n] = (pack_linear_weight(w, fmt), w.shape[0])
    fp32.append(l32); packed.append(lf)

def step(weights, f, inputs):
    start = time.perf_counter()
    for layer in weights:
        for n, (w, out) in layer.items():
            torch.ops.ingot.packed_linear(inputs[n], w, out, None, f)
    return time.perf_counter() - start

print(f"{model_name} {fmt_name} threads {torch.get_num_threads()}", flush=True)
for rows in rows_list:
    inputs = {n: torch.randn(rows, k) for n, (_, k) in shapes.items()}
    times = defaultdict(list)
    for _ in range(steps):
        times["fp32"].append(step(fp32, "fp32", inputs))
        for v in variants:
            var, _, depth = v.partition(":")
            os.environ["PL_VARIANT"] = var
            if depth: os.environ["PL_DEPTH"] = depth
            times[v].append(step(packed, fmt_name, inputs))
        os.environ["PL_VARIANT"] = "0"
    base = statistics.median(times["fp32"])
    print(f"{rows:3d} rows fp32 {base*1e3:7.1f} ms | " + "  ".join(
        f"v{v} {statistics.median(times[v])*1e3:7.1f} ({statistics.median(times[v])/base:.2f}x)" for v in variants), flush=True)
