"""YOLOv4 speed on this machine, in one run: ingot's artifact, eager PyTorch, and onnxruntime on the artifact's
exported ONNX, at each input size.

    python bench/yolo.py [--sizes 320,640] [--weights yolov4.weights] [--images 24] [--json bench/yolo-results.json]

Every runner does the same work per image: ingot's letterbox, the network, ingot's head decoding and NMS, so the
difference is how the network runs. Two measurements per runner and size:
- batch 1: images one after another; images/s and latency (median, p90);
- 8 concurrent clients: 8 threads each sending its share of the images. ingot's detector batches the images
  waiting into its compiled batch sizes (1, 2, 4, 8); the peers are called from the 8 threads as they are (both
  release the GIL, so their calls overlap), which is how they are served without a batcher.
The artifact is compiled on a cache miss (max batch 8, --emit onnx); without --weights it has random weights,
which cost what trained ones cost. Each runner is measured in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import torch

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.store import ArtifactStore
from ingot.compile.detector.kind import compile_detector
from ingot.compile.options import ONNX_FILE, DetectorOptions
from ingot.compile.verify.sample_inputs import synthetic_scene
from ingot.models.yolov4.network import YOLOv4
from ingot.models.yolov4.source import resolve_detector
from ingot.runtime.threads import call_on_fresh_thread
from ingot.runtime.vision.decode import decode_heads
from ingot.runtime.vision.detector import Detector
from ingot.runtime.vision.letterbox import letterbox
from ingot.runtime.vision.postprocess import DetectParams, select_detections

RUNNERS = ("ingot", "eager PyTorch", "onnxruntime")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(detect: Callable, images: list, clients: int) -> dict:
    """Run every image through ``detect`` from ``clients`` threads; images/s and per-image latency in ms."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one(image) -> None:
        start = time.perf_counter()
        detect(image)
        with lock:
            latencies.append((time.perf_counter() - start) * 1e3)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, images))
    duration = time.perf_counter() - start
    return {
        "images_per_s": round(len(images) / duration, 3),
        "latency_ms_median": round(statistics.median(latencies), 1),
        "latency_ms_p90": round(percentile(latencies, 0.9), 1),
    }


def peer_pipeline(run_network: Callable, manifest) -> Callable:
    """Letterbox, the peer's network, ingot's decoding and NMS: what ingot's detector does around its program."""
    info = manifest.detector
    params = DetectParams().resolve(info)

    def detect(image):
        pixels, placement = letterbox(image, info.input_size, info.preprocess.pad_value)
        heads = run_network(pixels[None])
        boxes, scores = decode_heads(heads, info)
        return select_detections(boxes[0], scores[0], placement, params, info)

    return detect


def make_runner(name: str, path: Path, threads: int) -> tuple[Callable, Callable]:
    """(detect, close) for one runner, built off the calling thread: only the thread that runs a network may own
    an OpenMP pool, or every kernel pays for a throttled spin-wait (ingot/runtime/threads.py), ingot's or not."""
    manifest = check_artifact(path)
    if name == "ingot":
        detector = Detector(path, manifest)
        detector.warm_up()
        return detector.detect, detector.shutdown
    if name == "eager PyTorch":
        from safetensors.torch import load_file

        def build() -> YOLOv4:
            eager = YOLOv4()
            eager.load_state_dict(load_file(path / manifest.weights.file))
            return eager.eval()

        eager = call_on_fresh_thread(build)

        def run_eager(batch):
            with torch.no_grad():
                return eager(batch)

        return peer_pipeline(run_eager, manifest), lambda: None
    import onnxruntime

    session_options = onnxruntime.SessionOptions()
    session_options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path / ONNX_FILE), session_options, providers=["CPUExecutionProvider"])
    run_onnx = lambda batch: [torch.from_numpy(o) for o in session.run(None, {"images": batch.numpy()})]  # noqa: E731
    return peer_pipeline(run_onnx, manifest), lambda: None


def measure_runner(name: str, path: Path, args: argparse.Namespace) -> dict:
    """One runner's measurements, in a process of its own (the bench spawns one per runner)."""
    torch.set_num_threads(args.threads)
    images = [synthetic_scene(640, 480, seed=i) for i in range(args.images)]
    detect, close = make_runner(name, path, args.threads)
    try:
        detect(images[0])  # warm-up
        return {
            "batch 1": measure(detect, images, clients=1),
            f"{args.concurrency} clients": measure(detect, images, clients=args.concurrency),
        }
    finally:
        close()


def bench_size(size: int, args, store: ArtifactStore) -> dict:
    source = resolve_detector("yolov4", args.weights, random_weights=args.weights is None)
    options = DetectorOptions(input_size=size, max_batch=args.max_batch, emit=("onnx",))
    result = compile_detector(source, options, store, quiet=True)
    results = {"artifact": result.key}
    for name in RUNNERS:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as process:
            results[name] = process.submit(measure_runner, name, result.path, args).result()
        print(f"{size} {name}: {json.dumps(results[name])}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="320,640", help="input sizes (default 320,640)")
    parser.add_argument("--weights", help="yolov4.weights or the port's .pth (default: random weights)")
    parser.add_argument("--images", type=int, default=24, help="images per measurement (default 24)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--max-batch", type=int, default=8, help="the artifact's largest batch (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="threads for torch and onnxruntime (default 2)")
    parser.add_argument("--cache-dir", help="artifact cache (default as for ingot)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = ArtifactStore.open(args.cache_dir)
    results = {"command": "python bench/yolo.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v),
               "threads": args.threads}  # fmt: skip
    for size in (int(s) for s in args.sizes.split(",")):
        results[str(size)] = bench_size(size, args, store)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
