"""The conversion check: is what was lowered to TT-NN the program that was captured?

A TT program is a torch.export program converted to a JAX function by torchax, then lowered by the TT plugin.
The device is not here, but the JAX function runs on JAX's CPU backend: each program's JAX function (exported by
the lowering worker as ``NAME.jax``) and the torch program it came from (``NAME.pt2``) run on the artifact's own
weights and on the same inputs (tt_conversion_inputs.py), and every output must agree to PCC >= ``MIN_PCC``.
Every TT compile runs it (a failure fails the compile unless ``--allow-unverified``) and records it in each
program's ``tt.conversion``; ``ingot verify`` runs it again from the artifact alone.

It runs in a child process (tt_conversion_worker.py) with JAX's CPU backend only: the TT plugin is never started,
and the memory of a step with a full-size KV cache goes back when it ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ingot.artifacts.manifest import ConversionCheck, Manifest, OutputAgreement
from ingot.errors import CompileError

MIN_PCC = 0.9999


def check_conversion(directory: Path, manifest: Manifest) -> Manifest:
    """``manifest`` with every lowered program's conversion check (run on the artifact in ``directory``)."""
    names = [p.name for p in manifest.programs if p.tt is not None and p.tt.jax_program]
    if not names:
        return manifest
    records = _run_worker(directory, manifest, names)
    checks = {name: _check(name, records.get(name)) for name in names}
    programs = [
        p.model_copy(update={"tt": p.tt.model_copy(update={"conversion": checks[p.name]})}) if p.name in checks else p
        for p in manifest.programs
    ]
    return manifest.model_copy(update={"programs": programs})


def conversion_failure(manifest: Manifest) -> str | None:
    """The programs whose conversion check failed, in one line (None: every checked program passed)."""
    failed = [p for p in manifest.programs if p.tt and p.tt.conversion and not p.tt.conversion.passed]
    if not failed:
        return None
    listing = "; ".join(f"{p.name}: {_worst(p.tt.conversion)}" for p in failed)
    return (
        f"TT conversion check failed ({listing}; min PCC {MIN_PCC}): the JAX function lowered to TT-NN does not "
        "compute what its torch program computes"
    )


def unchecked(manifest: Manifest) -> list[str]:
    """Lowered programs that carry no conversion check (an artifact built before ingot checked conversions)."""
    return [p.name for p in manifest.programs if p.tt and p.tt.status == "lowered" and p.tt.conversion is None]


def _worst(check: ConversionCheck) -> str:
    name, worst = min(check.outputs.items(), key=lambda item: item[1].pcc)
    return f"{name} PCC {worst.pcc:.6f}, max abs {worst.max_abs_error:.3g}"


def _check(name: str, record: dict | None) -> ConversionCheck:
    if record is None:
        raise CompileError(f"the TT conversion check of {name} did not finish")
    if "error" in record:
        raise CompileError(f"the TT conversion check of {name} could not run: {record['error']}")
    outputs = {output: OutputAgreement(**values) for output, values in record["outputs"].items()}
    lowest = min(o.pcc for o in outputs.values())
    return ConversionCheck(
        outputs=outputs,
        pcc=lowest,
        max_abs_error=max(o.max_abs_error for o in outputs.values()),
        min_pcc=MIN_PCC,
        passed=lowest >= MIN_PCC,
    )


def _run_worker(directory: Path, manifest: Manifest, names: list[str]) -> dict[str, dict]:
    with tempfile.TemporaryDirectory(prefix="ingot-conversion-") as session:
        job, results = Path(session) / "job.json", Path(session) / "results.jsonl"
        job.write_text(
            json.dumps(
                {"artifact": str(directory), "manifest": manifest.model_dump(mode="json"), "programs": names,
                 "results": str(results)}  # fmt: skip
            )
        )
        done = subprocess.run(
            [sys.executable, "-m", "ingot.compile.verify.tt_conversion_worker", str(job)],
            env=_environment(Path(session)), capture_output=True, text=True,
        )  # fmt: skip
        records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    if done.returncode != 0 and len(records) < len(names):
        tail = " | ".join(line for line in done.stderr.splitlines()[-6:] if line.strip())
        raise CompileError(f"the TT conversion check stopped (exit {done.returncode}): {tail}")
    return {record["name"]: record for record in records}


def _environment(session: Path) -> dict[str, str]:
    """JAX's CPU backend only, this very ingot importable, scratch files in the session."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.update(JAX_PLATFORMS="cpu", TMPDIR=str(session), PYTHONWARNINGS=env.get("PYTHONWARNINGS", "ignore"))
    return env
