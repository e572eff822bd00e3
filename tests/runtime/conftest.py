"""The engine every runtime test module may share: one per module, over the tiny llama artifact, so that a module's
prefix cache and counters start empty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingot.artifacts.integrity import check_artifact
from ingot.runtime.engine import Engine


@pytest.fixture(scope="module")
def artifact(compiled) -> Path:
    return compiled("llama").path


@pytest.fixture(scope="module")
def engine(artifact: Path) -> Iterator[Engine]:
    engine = Engine(artifact, check_artifact(artifact), num_blocks=128)
    yield engine
    engine.shutdown()
