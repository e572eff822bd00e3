"""A/B the programs of two artifacts of one model, step by step: prefill chunks and decode steps at a few sizes.

    python bench/ab_steps.py ARTIFACT_A ARTIFACT_B
    python bench/ab_steps.py ARTIFACT_A ARTIFACT_B --a-code CHECKOUT [--rounds 5]

Both artifacts load into one process and their steps alternate, which keeps a shared, noisy machine's drift out
of the ratio. An artifact that today's code cannot load (an older manifest schema) is measured with the ingot of
another checkout instead (--a-code: A runs from that checkout, B from this one): the two then run in turn as
processes, --rounds times each, and the ratio is of the medians over rounds. Prints median step times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PREFILL = [128, 512]  # tokens of one chunk, from position 0
DECODE = [(1, 200), (1, 1000), (8, 200), (32, 200), (32, 40)]  # (batch, context)
BLOCK = 16


def steps(runner) -> dict[str, tuple[Callable[[], object], int]]:
    """Each measured step of ``runner`` by label, with how many times to repeat it."""
    out = {}
    for tokens in PREFILL:
        table = list(range(1, 1 + -(-tokens // BLOCK)))
        ids = [(i * 7919) % 30000 for i in range(tokens)]
        out[f"prefill {tokens:3d} tokens   "] = (lambda t=table, i=ids: runner.prefill([i], [0], [t]), 8)
    for batch, context in DECODE:
        count = -(-context // BLOCK)
        tables = [list(range(1 + i * count, 1 + (i + 1) * count)) for i in range(batch)]
        args = ([5] * batch, [context - 1] * batch, tables)
        out[f"decode batch {batch:2d} context {context}"] = (lambda a=args: runner.decode(*a), 30 if batch == 1 else 8)
    return out


def load(paths: list[Path]) -> list:
    from ingot.artifacts.integrity import check_artifact
    from ingot.runtime.model_runner import ModelRunner
    from ingot.runtime.threads import call_on_fresh_thread

    blocks = 32 * (max(200, *PREFILL) // BLOCK + 1) + 2
    # Loaded off this thread, so that only the measuring thread keeps an OpenMP pool (see ingot/runtime/threads.py).
    return [call_on_fresh_thread(lambda p=p: ModelRunner(p, check_artifact(p), num_blocks=blocks)) for p in paths]


def median_ms(step: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def report(label: str, a: float, b: float) -> None:
    print(f"{label}: A {a:6.1f} ms  B {b:6.1f} ms  B/A {b / a:.2f}", flush=True)


def alternate_in_process(paths: list[Path]) -> None:
    runner_steps = [steps(runner) for runner in load(paths)]
    for label in runner_steps[0]:
        pair = [s[label] for s in runner_steps]
        for step, _ in pair:
            step()  # warm up
        times: list[list[float]] = [[], []]
        for _ in range(pair[0][1]):
            for (step, _), samples in zip(pair, times):
                start = time.perf_counter()
                step()
                samples.append(time.perf_counter() - start)
        report(label, *(statistics.median(samples) * 1000 for samples in times))


def one_artifact(path: Path) -> None:
    """Median step times of one artifact, as JSON on stdout (the child of a cross-checkout A/B)."""
    result = {}
    for label, (step, repeats) in steps(load([path])[0]).items():
        step()  # warm up
        result[label] = median_ms(step, repeats)
    print(json.dumps(result))


def alternate_processes(paths: list[Path], a_code: Path, rounds: int) -> None:
    here = Path(__file__).resolve().parent.parent
    rounds_by_side: list[list[dict[str, float]]] = [[], []]
    for round_ in range(rounds):
        for side, (path, code) in enumerate(zip(paths, (a_code, here))):
            env = dict(os.environ, PYTHONPATH=str(code))
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(path)], env=env, check=True, capture_output=True, text=True
            ).stdout
            rounds_by_side[side].append(json.loads(out.strip().splitlines()[-1]))
        print(f"round {round_ + 1} of {rounds} done", file=sys.stderr, flush=True)
    for label in rounds_by_side[0][0]:
        report(label, *(statistics.median(r[label] for r in side) for side in rounds_by_side))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", type=Path, nargs="+")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--a-code", type=Path, help="a checkout of ingot that runs ARTIFACT_A")
    parser.add_argument("--rounds", type=int, default=5, help="with --a-code: processes per artifact")
    args = parser.parse_args()
    if args.one:
        one_artifact(args.artifacts[0])
    elif args.a_code:
        alternate_processes(args.artifacts[:2], args.a_code, args.rounds)
    else:
        alternate_in_process(args.artifacts[:2])


if __name__ == "__main__":
    main()
