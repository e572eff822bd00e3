"""Versions of the software that shapes an artifact, read without importing it (a cache hit stays fast)."""

from __future__ import annotations

import platform
from importlib.metadata import version

import ingot

# What must match at load time: the compiled programs are native code against this torch's ABI.
LOAD_CRITICAL = ("ingot", "torch")


def toolchain_versions() -> dict[str, str]:
    return {
        "ingot": ingot.__version__,
        "torch": version("torch"),
        "transformers": version("transformers"),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def toolchain_mismatch(built_with: dict[str, str]) -> str | None:
    """A one-line reason this toolchain cannot load what ``built_with`` made, or None."""
    current = toolchain_versions()
    for name in LOAD_CRITICAL:
        if built_with.get(name) != current[name]:
            return f"built with {name} {built_with.get(name)}, this is {current[name]}: recompile"
    return None
