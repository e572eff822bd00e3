"""Compiled programs: run without holding Python's interpreter lock (a server stays responsive mid-step), at
every size a program takes."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.manifest import ProgramSpec
from ingot.errors import ProgramShapeError
from ingot.runtime.buckets import padded_size, step_sizes
from ingot.runtime.vision.runner import DetectorRunner


def test_other_python_threads_run_while_a_program_runs(compiled_yolo):
    path = compiled_yolo(320).path
    runner = DetectorRunner(path, check_artifact(path))
    images = torch.rand(runner.max_batch, 3, 320, 320)
    runner.run(images)  # first call: one-time setup
    worker = threading.Thread(target=runner.run, args=(images,))
    ticks = [time.perf_counter()]
    worker.start()
    while worker.is_alive():  # each tick needs the interpreter lock
        time.sleep(0.001)
        ticks.append(time.perf_counter())
    worker.join()
    duration = ticks[-1] - ticks[0]
    longest_wait = max(later - earlier for earlier, later in itertools.pairwise(ticks))
    assert duration > 0.05, "the program ran too briefly to tell"
    assert longest_wait < duration / 4, f"this thread waited {longest_wait:.3f} s of a {duration:.3f}-s program call"


def test_an_artifact_without_ingots_runner_is_refused_with_a_clear_error(compiled_yolo, tmp_path):
    """Programs that list no native library (an artifact compiled before the runner) name the fix, in a process
    that has not loaded the library from elsewhere."""
    path = compiled_yolo(320).path
    manifest = check_artifact(path)
    old = manifest.model_copy(update={"programs": [p.model_copy(update={"kernels": []}) for p in manifest.programs]})
    (tmp_path / "manifest.json").write_text(old.model_dump_json())
    script = (
        "import sys; from pathlib import Path\n"
        "from ingot.artifacts.manifest import Manifest\n"
        "from ingot.errors import ArtifactError\n"
        "from ingot.runtime.programs import load_programs\n"
        "try:\n"
        "    load_programs(Path(sys.argv[1]), Manifest.model_validate_json(Path(sys.argv[2]).read_text()))\n"
        "except ArtifactError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "manifest.json")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "compile the model again" in result.stdout


@pytest.mark.parametrize("ending", [signal.SIGTERM, signal.SIGKILL])
def test_programs_leave_nothing_unpacked_once_loaded_however_the_process_ends(compiled, tmp_path, ending):
    """AOTInductor unpacks each package under $TMPDIR (~2 GB for a language model) and removed it only when the
    program was destroyed, which a server ending on a signal never does."""
    unpack_root = tmp_path / "tmp"
    unpack_root.mkdir()
    script = (
        "import sys, time; from pathlib import Path\n"
        "from ingot.artifacts.manifest import Manifest\n"
        "from ingot.runtime.programs import load_programs\n"
        "directory = Path(sys.argv[1])\n"
        "programs = load_programs(directory, Manifest.read(directory))\n"
        "print('loaded', flush=True)\n"
        "time.sleep(600)\n"
    )
    env = dict(os.environ, TMPDIR=str(unpack_root))
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(compiled("llama").path)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline() == "loaded\n"
        assert list(unpack_root.iterdir()) == []
    finally:
        process.send_signal(ending)
        process.wait(timeout=60)
    assert list(unpack_root.iterdir()) == []


def _spec(name: str, kind: str, batch: tuple[int, int], tokens: tuple[int, int] | None = None) -> ProgramSpec:
    return ProgramSpec(name=name, kind=kind, file=f"programs/{name}", batch=batch, tokens=tokens, inputs=[], outputs=[])


def test_steps_run_at_every_size_a_dynamic_program_takes_and_only_at_a_static_programs_own():
    cpu = [_spec("detect_1", "detect", (1, 1)), _spec("detect", "detect", (2, 8))]
    assert step_sizes(cpu, "detect", lambda spec: spec.batch) == list(range(1, 9))  # 3 images run as 3, not 4
    tt = [_spec(f"detect_{b}", "detect", (b, b)) for b in (1, 2, 4, 8)]
    assert step_sizes(tt, "detect", lambda spec: spec.batch) == [1, 2, 4, 8]
    prefill = [_spec("prefill", "prefill", (1, 1), tokens=(16, 512)), *cpu]
    assert step_sizes(prefill, "prefill", lambda spec: spec.tokens) == list(range(16, 513))


def test_a_step_pads_to_the_smallest_size_that_holds_it_and_nothing_holds_more_than_the_largest():
    tt_sizes = [1, 2, 4, 8]
    assert [padded_size(n, tt_sizes, "a batch holds {} images") for n in (1, 3, 5, 8)] == [1, 4, 8, 8]
    for count in (0, 9):
        with pytest.raises(ProgramShapeError, match=f"a batch holds 1 to 8 images, not {count}"):
            padded_size(count, tt_sizes, "a batch holds {} images")
