"""Loading a model must not leave an OpenMP pool on the caller's thread (see ingot/runtime/threads.py): with
one more pool than cores every kernel of the model's own thread waits on a futex wake-up."""

import subprocess
import sys

import pytest
import torch

from ingot.runtime.threads import call_on_fresh_thread

COUNT_THREADS = """
import os, sys, time
from pathlib import Path
import torch
from ingot.artifacts.integrity import check_artifact
from ingot.runtime.engine import Engine

def os_threads():
    return len(os.listdir("/proc/self/task"))

path = Path(sys.argv[1])
manifest = check_artifact(path)
before = os_threads()
engine = Engine(path, manifest, num_blocks=64)  # the step thread starts with the first request
for _ in range(50):  # the loading thread's pool winds down as that thread exits
    if os_threads() == before:
        break
    time.sleep(0.02)
print(before, os_threads())
"""


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="one thread: OpenMP starts no pool")
def test_loading_an_engine_leaves_no_worker_threads_behind(compiled):
    artifact = compiled("llama").path
    done = subprocess.run([sys.executable, "-c", COUNT_THREADS, str(artifact)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split())
    assert after == before


def test_a_fresh_thread_returns_the_result_or_raises_the_error():
    assert call_on_fresh_thread(lambda: torch.ones(3).sum().item()) == 3.0
    with pytest.raises(ZeroDivisionError):
        call_on_fresh_thread(lambda: 1 / 0)
