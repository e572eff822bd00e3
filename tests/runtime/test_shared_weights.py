"""Two servers of one artifact on a host share its weights: they are memory-mapped from the artifact, not read
into each process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SERVE_ONE_REQUEST = """
import sys
from pathlib import Path
from ingot.artifacts.integrity import check_artifact
from ingot.runtime.engine import Engine
from ingot.runtime.sampling_params import SamplingParams
path = Path(sys.argv[1])
engine = Engine(path, check_artifact(path), num_blocks=32)
engine.generate([[1, 2, 3, 4]], [SamplingParams(max_tokens=2)])  # every weight read at least once
print("ready", flush=True)
sys.stdin.read()  # until the test has looked
engine.shutdown()
"""


def weights_mapping(pid: int, file: Path) -> dict[str, int]:
    """Rss and Pss (kB) of the process's mappings of ``file``."""
    totals = {"Rss": 0, "Pss": 0}
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = len(fields) >= 6 and fields[5] == str(file)
        elif inside and fields[0].rstrip(":") in totals:
            totals[fields[0].rstrip(":")] += int(fields[1])
    return totals


def test_two_processes_of_one_artifact_share_its_weight_pages(compiled):
    path = compiled("llama").path
    weights = (path / "weights.safetensors").resolve()
    processes = [
        subprocess.Popen([sys.executable, "-c", SERVE_ONE_REQUEST, str(path)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    try:
        for process in processes:
            assert process.stdout.readline().strip() == "ready"
        mappings = [weights_mapping(process.pid, weights) for process in processes]
    finally:
        for process in processes:
            process.communicate("", timeout=120)
    size_kb = weights.stat().st_size / 1024
    for mapping in mappings:
        assert mapping["Rss"] >= 0.9 * size_kb  # the whole file is resident: every weight was read
        assert mapping["Pss"] <= 0.6 * mapping["Rss"]  # and each page is counted half to each process
