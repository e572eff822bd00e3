"""The target a compile names: cpu, or a Tenstorrent device."""

from __future__ import annotations

from ingot.compile.cpu.target import CPU
from ingot.compile.plan import Target
from ingot.compile.tt.specs import device_spec
from ingot.compile.tt.target import TtTarget


def get_target(name: str) -> Target:
    """The target called ``name``. A Tenstorrent target's plugin is checked by the cache key, before any build."""
    if name == "cpu":
        return CPU
    return TtTarget(device_spec(name))
