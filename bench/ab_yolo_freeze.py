"""A/B: YOLOv4's detect program lowered as before (weights outside the program) and frozen (batch norms folded,
oneDNN weights prepacked), against eager PyTorch, in one process, alternating call by call.

    python bench/ab_yolo_freeze.py [--size 320] [--calls 7]

Both programs are compiled into a temporary directory first (about a minute each on 2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ingot.compile.targets import CPU
from ingot.models.yolov4.init import randomize
from ingot.models.yolov4.network import YOLOv4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--calls", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = YOLOv4()
    randomize(model, args.size)
    model.eval()
    images = torch.rand(1, 3, args.size, args.size)
    with torch.no_grad():
        exported = torch.export.export(model, (images,))
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, freeze in (("unfrozen", False), ("frozen", True)):
            path = Path(tmp) / f"{name}.pt2"
            CPU.lower(exported, path, freeze=freeze)
            runners[name] = torch._inductor.aoti_load_package(str(path))
        weights = dict(model.state_dict())
        unfrozen = runners["unfrozen"]
        unfrozen.load_constants({n: weights[n] for n in unfrozen.get_constant_fqns()}, check_full_update=True, user_managed=True)
        runners["eager"] = model
        times: dict[str, list[float]] = {name: [] for name in runners}
        with torch.no_grad():
            for run in runners.values():
                run(images)  # warm-up
            for _ in range(args.calls):
                for name, run in runners.items():
                    start = time.perf_counter()
                    run(images)
                    times[name].append(time.perf_counter() - start)
    for name, samples in times.items():
        print(f"{name:9s} median {statistics.median(samples) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
