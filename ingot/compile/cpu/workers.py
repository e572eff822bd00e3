"""Lowering cpu programs side by side, each in a spawned worker process that loads its saved exported program."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Protocol

import psutil
import torch

from ingot.compile.kernels import load_kernels
from ingot.compile.plan import ProgramPlan
from ingot.compile.weightless import load_program, load_with_empty_weights, save_weightless
from ingot.errors import CompileError
from ingot.progress import note


class Lowers(Protocol):
    """What a worker lowers with (the cpu target, pickled into each worker)."""

    def lower(self, exported: torch.export.ExportedProgram, out_file: Path, plan: ProgramPlan) -> None: ...


def lowering_workers(programs: list[tuple[ProgramPlan, torch.export.ExportedProgram]]) -> int:
    """As many workers as cores and programs allow, and as memory allows: a frozen lowering holds a few copies of
    the weights besides inductor itself; any other gets none (see ``lower_in_workers``)."""
    weights = max(
        sum(t.numel() * t.element_size() for t in exported.state_dict.values()) if plan.frozen else 0
        for plan, exported in programs
    )
    per_worker = 4 * weights + 2 * 2**30
    by_memory = psutil.virtual_memory().available // per_worker
    return max(1, min(len(programs), os.cpu_count() or 1, by_memory))


def lower_in_workers(
    target: Lowers,
    programs: list[tuple[ProgramPlan, torch.export.ExportedProgram]],
    files: dict[str, Path],
    workers: int,
) -> None:
    """Lower each program in a worker. A frozen program goes with its weights (they fold into it); any other with
    none: its weights are inputs, only their shapes matter, and a copy per worker would not fit beside a large
    model's."""
    saved = {}
    for plan, exported in programs:
        saved[plan.name] = files[plan.name].with_name(f"{plan.name}.exported.pt2")
        if plan.frozen:
            torch.export.save(exported, saved[plan.name])
        else:
            save_weightless(exported, saved[plan.name])
    try:
        # spawn, not fork: a forked child inherits the parent's OpenMP thread pool, which hangs it
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, context, initializer=_exit_with, initargs=(os.getpid(),)) as pool:
            jobs = {
                pool.submit(_lower_saved, target, saved[plan.name], files[plan.name], plan): plan.name
                for plan, _ in programs
            }
            for job in as_completed(jobs):
                job.result()
                note(f"{jobs[job]} lowered")
    except BrokenProcessPool as error:
        raise CompileError("a lowering worker died (out of memory?); nothing was published") from error
    finally:
        for file in saved.values():
            file.unlink(missing_ok=True)


def _exit_with(parent: int) -> None:
    """A worker's first step: die with the compile that started it, however it is killed (Linux's parent-death
    signal; elsewhere a killed compile's workers finish their program, into a build directory `ingot gc` removes)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the compile died before the signal was armed
        os._exit(1)


def _lower_saved(target: Lowers, exported_file: Path, out_file: Path, plan: ProgramPlan) -> None:
    """A worker process's job: one saved exported program to one compiled program."""
    torch._inductor.config.compile_threads = 1  # the workers share the cores already: no pool of its own
    if plan.decode_kernel or plan.packed_linears:
        load_kernels(plan.cpu_isa)  # the program calls ingot's ops: loading it needs them registered
    exported = load_program(exported_file) if plan.frozen else load_with_empty_weights(exported_file)
    target.lower(exported, out_file, plan)
