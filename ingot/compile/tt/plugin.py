"""The TT PJRT plugin in compile-only mode: which plugin, which system descriptor, and the worker process.

ingot drives the plugin only through JAX's PJRT plugin interface (the ``jax_plugins`` entry point that
registers the ``tt`` platform, ``jax.jit(..., device=tt).lower().compile(compiler_options)``), so PyPI's
``jax-tt-plugin`` (what CI installs) and Tenstorrent's own ``pjrt-plugin-tt`` wheel are used the same way.

The plugin always runs in a child process (``ingot.compile.tt.worker``): it reads its environment once, when
JAX creates the client; it unpacks ~420 MB of tt-metal runtime assets into ``$TMPDIR`` and writes the system
descriptor it uses to ``$TMPDIR/tt_pjrt_system_descriptor`` (a fixed name, so each session gets its own
TMPDIR); and a compiler failure can abort the whole process (``LLVM ERROR``), which must not take
``ingot compile`` with it. This module imports neither torch nor jax, so the cache key stays fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ingot.artifacts.manifest import SystemDescriptorInfo
from ingot.digest import sha256_file
from ingot.errors import OptionError

# Distributions that provide the PJRT plugin for the "tt" platform, in order of preference.
PLUGIN_DISTRIBUTIONS = ("pjrt-plugin-tt", "jax-tt-plugin")
# What the worker imports besides the plugin; their versions shape the lowered program.
FRONTEND_DISTRIBUTIONS = ("jax", "jaxlib", "torchax")
INSTALL_HINT = "pip install -e '.[tt]'"

# The system descriptors: the plugin's own mock Blackhole p150 (captured by capture_descriptor.py), and tt-xla's
# compile-only Wormhole n150 and n300 ones re-stamped with this plugin's schema hash (descriptors/provenance.json
# says where each is from and what changed; tt-xla's license and notice lie beside them).
DESCRIPTOR_DIR = Path(__file__).parent / "descriptors"
DESCRIPTORS = {target: DESCRIPTOR_DIR / f"{target}.ttsys" for target in ("p150", "n150", "n300")}
PROVENANCE = DESCRIPTOR_DIR / "provenance.json"


@dataclass(frozen=True)
class Plugin:
    distribution: str
    version: str


def find_plugin() -> Plugin:
    """The installed TT PJRT plugin ($INGOT_TT_PLUGIN names one when several are installed)."""
    wanted = os.environ.get("INGOT_TT_PLUGIN")
    for name in (wanted,) if wanted else PLUGIN_DISTRIBUTIONS:
        try:
            return Plugin(name, metadata.version(name))
        except metadata.PackageNotFoundError:
            continue
    raise OptionError(
        f"Tenstorrent targets need a TT PJRT plugin ({' or '.join(PLUGIN_DISTRIBUTIONS)}) and torchax: {INSTALL_HINT}"
    )


def frontend_versions() -> dict[str, str]:
    versions = {}
    for name in FRONTEND_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise OptionError(f"Tenstorrent targets need {name}: {INSTALL_HINT}") from None
    return versions


def descriptor(target: str) -> Path:
    path = DESCRIPTORS.get(target)
    if path is None or not path.is_file():
        raise OptionError(f"target {target}: no system descriptor ships with this ingot")
    return path


def descriptor_info(target: str) -> SystemDescriptorInfo:
    """The descriptor ``target`` compiles against, its sha256 and provenance, for the manifest."""
    path = descriptor(target)
    provenance = json.loads(PROVENANCE.read_text())[target]
    return SystemDescriptorInfo(file=path.name, sha256=sha256_file(path), **provenance)


def toolchain(target: str) -> dict[str, str]:
    """Everything about the TT toolchain that changes a lowered program: part of the cache key and manifest."""
    plugin = find_plugin()
    return {
        "plugin": plugin.distribution,
        "plugin_version": plugin.version,
        **frontend_versions(),
        "system_descriptor_sha256": sha256_file(descriptor(target)),
    }


def worker_environment(target: str, tmpdir: Path, metal_cache: Path) -> dict[str, str]:
    """The child's environment: compile-only mode against the shipped descriptor, its own TMPDIR."""
    env = dict(os.environ)
    # The child imports this very ingot, whatever its working directory and the installed one
    package_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.update(
        JAX_PLATFORMS="cpu,tt",
        TT_COMPILE_ONLY_SYSTEM_DESC=str(descriptor(target)),
        TMPDIR=str(tmpdir),
        TT_METAL_CACHE=str(metal_cache),  # kernels built at optimization levels 1-2, kept beside inductor's cache
        TT_LOGGER_LEVEL=env.get("TT_LOGGER_LEVEL", "error"),
        TTXLA_LOGGER_LEVEL=env.get("TTXLA_LOGGER_LEVEL", "ERROR"),
        PYTHONWARNINGS=env.get("PYTHONWARNINGS", "ignore"),
    )
    env.pop("TT_METAL_MOCK_CLUSTER_DESC_PATH", None)  # compile-only: never a mock cluster of the caller's
    return env
