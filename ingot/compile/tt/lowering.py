"""Lower ExportedPrograms to TT-NN flatbuffers for a Tenstorrent target, on a host with no device.

``lower_programs`` takes any list of (name, ExportedProgram): the language-model step programs of
``TtTarget.plan``, the YOLOv4 batch programs of ``TtTarget.detector_plan`` (tt/target.py), or anything
torch.export captures.
Programs are saved into ``out_dir`` without their weights (``NAME.pt2``: only shapes matter to the compiler, and
the conversion check reads the weights from the artifact), lowered by plugin worker processes side by side (each
takes the next program no other worker has taken, see ``lowering_workers``; they start while the programs are still
being captured), and each one's
``.ttnn``, TTIR and TTNN MLIR land in ``out_dir`` as ``NAME.ttnn``, ``NAME.ttir.mlir``, ``NAME.ttnn.mlir``, beside
its JAX function exported for JAX's CPU backend (``NAME.jax``, see verify/tt_conversion.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import psutil
from torch.export import ExportedProgram

from ingot.compile.tt import plugin
from ingot.compile.tt.ops import unlowered_ops
from ingot.compile.tt.specs import device_spec
from ingot.compile.weightless import save_weightless
from ingot.errors import CompileError

TORCH_PROGRAM_SUFFIX = ".pt2"
# What one plugin worker may hold, with room to spare: lowering SmolLM2's prefill_512 peaked at 0.84 GB (its weights
# are zero-stride stand-ins)
WORKER_MEMORY = 2 * 2**30


@dataclass(frozen=True)
class LoweringResult:
    """One program's outcome: ``lowered`` (files written) or ``cpu-fallback`` (ops that did not lower)."""

    name: str
    status: str
    files: dict[str, str]
    ttnn_ops: dict[str, int]
    unlowered_ops: list[str]
    error: str | None
    inputs: list[dict]
    outputs: list[dict]
    weights: list[dict]
    parameter_formats: dict[str, str | None]  # each weight it reads -> its block format or None (tt/ops.py)
    seconds: float


def _run_worker(job: dict, session: Path, env: dict[str, str]) -> tuple[dict[str, dict], str | None, str]:
    """Run the worker on ``job``; returns its results by name, the program it died in (or None), its log."""
    job_file, results, log = session / "job.json", Path(job["results"]), session / "worker.log"
    results.unlink(missing_ok=True)
    job_file.write_text(json.dumps(job))
    with log.open("w") as out:
        # cwd: tt-metal writes generated/ files into the working directory when it opens a (mock) device
        code = subprocess.call(
            [sys.executable, "-m", "ingot.compile.tt.worker", str(job_file)], env=env, stdout=out, stderr=out, cwd=session
        )
    records: dict[str, dict] = {}
    started = None
    if results.exists():
        for line in results.read_text().splitlines():
            record = json.loads(line)
            if record["status"] == "start":
                started = record["name"]
            else:
                records[record["name"]] = record
                started = None
    text = log.read_text(errors="replace")
    if code != 0 and started is None and not records:
        raise CompileError(f"the TT plugin worker failed before lowering anything (exit {code}): {_tail(text)}")
    return records, (started if code != 0 else None), text


def _tail(text: str, lines: int = 6) -> str:
    useful = [line for line in text.splitlines() if line.strip() and not line.startswith((" ---", "  "))]
    return " | ".join(useful[-lines:])


def lowering_workers(programs: int) -> int:
    """As many plugin workers as cores and programs allow, and as memory allows."""
    by_memory = psutil.virtual_memory().available // WORKER_MEMORY
    return max(1, min(programs, os.cpu_count() or 1, by_memory))


def lower_programs(
    programs: Iterable[tuple[str, ExportedProgram]],
    out_dir: Path,
    target: str = "p150",
    optimization_level: int = 0,
    allow_cpu_fallback: bool = False,
    cache_dir: Path | None = None,
    session_root: Path | None = None,
    weight_dtype: str | None = None,
    names: list[str] | None = None,
    workers: int | None = None,
    waiting: Callable[[], AbstractContextManager] = nullcontext,
) -> list[LoweringResult]:
    """Lower every program for ``target`` into ``out_dir``; a program with ops that did not lower fails
    the call naming them, unless ``allow_cpu_fallback`` records them (and writes no .ttnn for it).

    Weights enter TT-MLIR as parameters (tt/arguments.py); ``weight_dtype`` (``bfp_bf8``, ``bfp_bf4``) is the
    plugin's ``experimental_weight_dtype``, the format it converts matmul weights to (None: they stay float32).

    ``workers`` plugin processes (default: ``lowering_workers``) lower the programs side by side, in their order: each
    takes the next program none has taken. They start at once: given the programs' ``names``, ``programs`` may be a
    generator that captures each one as it is asked for, and each is lowered while the next is captured; the call
    then waits for the rest in the ``waiting()`` context (a progress stage). ``cache_dir`` keeps the plugin's kernel
    cache; the session's scratch files (each worker's ~420 MB of unpacked plugin assets) live below ``session_root``
    until the call returns."""
    device_spec(target)
    if names is None:
        programs = list(programs)
        names = [name for name, _ in programs]
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir or Path(tempfile.gettempdir()) / "ingot-tt"
    session_root = session_root or cache_dir / "tt-sessions"
    session_root.mkdir(parents=True, exist_ok=True)
    session = Path(tempfile.mkdtemp(prefix=".tt-session-", dir=session_root))
    options = {"backend": "ttnn_flatbuffer", "optimization_level": str(optimization_level)}
    if weight_dtype is not None:
        options["experimental_weight_dtype"] = weight_dtype
    saved, claims = session / "saved", session / "claims"  # a file per program: saved by us, claimed by a worker
    saved.mkdir()
    claims.mkdir()
    files = {name: out_dir / f"{name}{TORCH_PROGRAM_SUFFIX}" for name in names}
    job = {
        "programs": [
            {"name": name, "exported": str(files[name]), "out_dir": str(out_dir), "saved": str(saved / name)}
            for name in names
        ],
        "compiler_options": options,
        "claims": str(claims),
        "cancelled": str(session / "cancelled"),
    }
    count = workers or lowering_workers(len(names))

    def run(index: int) -> dict[str, dict]:
        return _lower_in_worker(job, session / f"worker-{index}", target, cache_dir / "tt-metal-cache")

    try:
        with ThreadPoolExecutor(count) as pool:
            running = [pool.submit(run, index) for index in range(count)]
            try:
                for name, exported in programs:
                    save_weightless(exported, files[name], keep_example_inputs=False)
                    (saved / name).touch()  # the worker that claimed it may start
            except BaseException:
                (session / "cancelled").touch()  # the workers waiting for a program stop waiting
                raise
            with waiting():
                records = {name: record for done in running for name, record in done.result().items()}
    finally:
        shutil.rmtree(session, ignore_errors=True)  # the plugin's unpacked runtime assets (~420 MB) included
    for name in names:
        records[name].setdefault("files", {})["torch_program"] = f"{name}{TORCH_PROGRAM_SUFFIX}"
    results = [_result(name, records[name]) for name in names]
    _raise_for_failures(results, allow_cpu_fallback)
    return results


def _lower_in_worker(job: dict, session: Path, target: str, metal_cache: Path) -> dict[str, dict]:
    """One plugin worker's share of ``job``: it lowers programs until none is left untaken. If the plugin aborts the
    process, the program it was lowering failed, and a new worker goes on with the rest."""
    (session / "tmp").mkdir(parents=True)
    env = plugin.worker_environment(target, session / "tmp", metal_cache)
    job = {**job, "results": str(session / "results.jsonl")}
    records: dict[str, dict] = {}
    while True:
        done, died_in, log = _run_worker(job, session, env)
        records.update(done)
        if died_in is None:
            return records
        records[died_in] = {
            "status": "failed",
            "error": f"the TT plugin aborted while lowering it: {_tail(log)}",
            "unlowered_ops": unlowered_ops(log),
        }


def _result(name: str, record: dict) -> LoweringResult:
    status = record["status"]
    if status == "failed" and record.get("unlowered_ops"):
        status = "cpu-fallback"  # a fallback candidate; _raise_for_failures decides whether it is allowed
    return LoweringResult(
        name=name,
        status=status,
        files=record.get("files", {}),
        ttnn_ops=record.get("ttnn_ops", {}),
        unlowered_ops=record.get("unlowered_ops", []),
        error=record.get("error"),
        inputs=record.get("inputs", []),
        outputs=record.get("outputs", []),
        weights=record.get("weights", []),
        parameter_formats=record.get("parameter_formats", {}),
        seconds=record.get("seconds", 0.0),
    )


def _raise_for_failures(results: list[LoweringResult], allow_cpu_fallback: bool) -> None:
    failed = [r for r in results if r.status == "failed"]
    if failed:
        first = failed[0]
        raise CompileError(f"TT lowering of {first.name} failed: {first.error}")
    fallback = [r for r in results if r.status == "cpu-fallback"]
    if fallback and not allow_cpu_fallback:
        listing = "; ".join(f"{r.name}: {', '.join(r.unlowered_ops)}" for r in fallback)
        raise CompileError(f"ops that did not lower to TT-NN ({listing}); --allow-cpu-fallback records them instead")
