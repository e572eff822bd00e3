"""Lower ExportedPrograms to TT-NN flatbuffers for a Tenstorrent target, on a host with no device.

``lower_programs`` takes any list of (name, ExportedProgram): the language-model step programs of
``TtTarget.plan``, the YOLOv4 batch programs of ``TtTarget.detector_plan`` (tt/target.py), or anything
torch.export captures.
Programs are saved into ``out_dir`` without their weights (``NAME.pt2``: only shapes matter to the compiler, and
the conversion check reads the weights from the artifact), lowered in one plugin worker process, and each one's
``.ttnn``, TTIR and TTNN MLIR land in ``out_dir`` as ``NAME.ttnn``, ``NAME.ttir.mlir``, ``NAME.ttnn.mlir``, beside
its JAX function exported for JAX's CPU backend (``NAME.jax``, see verify/tt_conversion.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch.export import ExportedProgram

from ingot.compile.tt import plugin
from ingot.compile.tt.ops import unlowered_ops
from ingot.compile.tt.specs import device_spec
from ingot.compile.weightless import save_weightless
from ingot.errors import CompileError

TORCH_PROGRAM_SUFFIX = ".pt2"


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


def lower_programs(
    programs: list[tuple[str, ExportedProgram]],
    out_dir: Path,
    target: str = "p150",
    optimization_level: int = 0,
    allow_cpu_fallback: bool = False,
    cache_dir: Path | None = None,
    session_root: Path | None = None,
) -> list[LoweringResult]:
    """Lower every program for ``target`` into ``out_dir``; a program with ops that did not lower fails
    the call naming them, unless ``allow_cpu_fallback`` records them (and writes no .ttnn for it).

    ``cache_dir`` keeps the plugin's kernel cache; the session's scratch files (the saved programs, the
    plugin's ~420 MB of unpacked assets) live below ``session_root`` until the call returns."""
    device_spec(target)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir or Path(tempfile.gettempdir()) / "ingot-tt"
    session_root = session_root or cache_dir / "tt-sessions"
    session_root.mkdir(parents=True, exist_ok=True)
    session = Path(tempfile.mkdtemp(prefix=".tt-session-", dir=session_root))
    try:
        jobs = []
        for name, exported in programs:
            path = out_dir / f"{name}{TORCH_PROGRAM_SUFFIX}"
            save_weightless(exported, path, keep_example_inputs=False)
            jobs.append({"name": name, "exported": str(path), "out_dir": str(out_dir)})
        (session / "tmp").mkdir()
        env = plugin.worker_environment(target, session / "tmp", cache_dir / "tt-metal-cache")
        options = {"backend": "ttnn_flatbuffer", "optimization_level": str(optimization_level)}
        records: dict[str, dict] = {}
        remaining = jobs
        while remaining:
            job = {"programs": remaining, "compiler_options": options, "results": str(session / "results.jsonl")}
            done, died_in, log = _run_worker(job, session, env)
            records.update(done)
            if died_in is not None:  # the plugin aborted the process: that program failed, the rest go again
                records[died_in] = {
                    "status": "failed",
                    "error": f"the TT plugin aborted while lowering it: {_tail(log)}",
                    "unlowered_ops": unlowered_ops(log),
                }
            remaining = [j for j in remaining if j["name"] not in records]
    finally:
        shutil.rmtree(session, ignore_errors=True)  # the plugin's unpacked runtime assets (~420 MB) included
    for name, _ in programs:
        records[name].setdefault("files", {})["torch_program"] = f"{name}{TORCH_PROGRAM_SUFFIX}"
    results = [_result(name, records[name]) for name, _ in programs]
    _raise_for_failures(results, allow_cpu_fallback)
    return results


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
