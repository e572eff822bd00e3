"""The sizes a step runs at: which batch and token counts the programs take, and the smallest that holds a step.

Pure arithmetic over the manifest's program specs, so the scheduler needs neither torch nor the programs.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from ingot.artifacts.manifest import ProgramSpec
from ingot.errors import ProgramShapeError


def step_sizes(specs: list[ProgramSpec], kind: str, sizes: Callable[[ProgramSpec], tuple[int, int]]) -> list[int]:
    """Every size a step of ``kind`` runs at unpadded: a static program's one size (a bucket), and every size in
    a dynamic program's range (cpu: a 134-token chunk runs as 134 tokens, 12 sequences as 12 rows)."""
    return sorted({n for spec in specs if spec.kind == kind for n in range(sizes(spec)[0], sizes(spec)[1] + 1)})


def padded_size(count: int, sizes: list[int], limit: str) -> int:
    """The smallest size a program runs that holds ``count`` (``sizes`` from ``step_sizes``); refuse what none
    holds, saying so with ``limit`` ("a decode step holds {} sequences")."""
    index = bisect.bisect_left(sizes, count)
    if count < 1 or index == len(sizes):
        raise ProgramShapeError(limit.format(f"1 to {sizes[-1]}") + f", not {count}")
    return sizes[index]
