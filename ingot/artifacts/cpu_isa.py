"""Which CPU a cpu artifact's native code needs, and whether this CPU has it.

A cpu artifact's programs and ingot's native library are compiled for one x86-64 vector ISA (``--cpu-isa``): every
native file for one psABI level (``-march=x86-64-v3`` for avx2, ``x86-64-v4`` for avx512), so the manifest can name
the CPU flags its code may use, and a CPU that lacks one is refused before any of that code is loaded (it would die
of SIGILL). Compile (the options, the lowering, the library) and the runtime (the check) read this one table.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from ingot.artifacts.manifest import CpuRequirement, Manifest
from ingot.errors import CpuIsaError

CPUINFO = Path("/proc/cpuinfo")

# The x86-64 psABI levels, as Linux names their flags in /proc/cpuinfo (pni: SSE3, abm: LZCNT).
X86_64_V2 = ("cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3")
X86_64_V3 = (*X86_64_V2, "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe")
X86_64_V4 = (*X86_64_V3, "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")


@dataclass(frozen=True)
class VectorIsa:
    """A vector ISA native code is compiled for: the same for inductor's programs and ingot's library."""

    name: str
    march: str  # the psABI level every native file is compiled for (gcc/clang ``-march``)
    bit_width: int  # inductor's vector width (``cpp.simdlen``)
    capability_macro: str  # which of ATen's ``Vectorized`` implementations the code includes
    flags: tuple[str, ...]  # what the code may use: the CPU flags a machine needs to run it


# Ordered from the most portable: a CPU's own ISA is the last one it has every flag of.
ISAS = {
    "avx2": VectorIsa("avx2", "x86-64-v3", 256, "CPU_CAPABILITY_AVX2", X86_64_V3),
    "avx512": VectorIsa("avx512", "x86-64-v4", 512, "CPU_CAPABILITY_AVX512", X86_64_V4),
}
CPU_ISA_CHOICES = ("native", *ISAS)  # what --cpu-isa takes; native: this CPU's own ISA

# Flags an artifact's code may use beyond its ISA's, each because an option chose it: flag -> what compiles without.
BF16_PRODUCTS_FLAG = "avx512_bf16"  # vdpbf16ps: packed_linear's bf16 x bf16 products (--activation-dtype bf16)
OPTIONAL_FLAGS = {BF16_PRODUCTS_FLAG: "--activation-dtype fp32"}


@functools.cache  # the CPU does not change under a running process
def host_flags() -> frozenset[str]:
    """This CPU's flags, as the kernel reports them (empty where there is no /proc/cpuinfo)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def has_flag(flag: str) -> bool:
    """Whether this CPU has ``flag`` (as /proc/cpuinfo names it)."""
    return flag in host_flags()


def has_isa(name: str) -> bool:
    """Whether this CPU has every flag code for vector ISA ``name`` may use."""
    return set(ISAS[name].flags) <= host_flags()


def host_isa() -> str | None:
    """The widest vector ISA this CPU has, or None (not x86-64, or older than AVX2)."""
    found = [name for name in ISAS if has_isa(name)]
    return found[-1] if found else None


def missing_flags(requirement: CpuRequirement) -> list[str]:
    """The flags ``requirement`` names that this CPU lacks."""
    have = host_flags()
    return [flag for flag in requirement.flags if flag not in have]


def cpu_requirement(isa: str, extra_flags: tuple[str, ...] = ()) -> CpuRequirement:
    """The manifest's ``cpu`` section for code compiled for ``isa`` that also uses ``extra_flags`` (OPTIONAL_FLAGS)."""
    spec = ISAS[isa]
    return CpuRequirement(isa=spec.name, march=spec.march, flags=[*spec.flags, *extra_flags])


def missing_optional_flags(requirement: CpuRequirement) -> list[str]:
    """The flags this CPU lacks of those ``requirement`` names beyond its ISA's, when it lacks no other: an
    option's code (OPTIONAL_FLAGS) is all that keeps the artifact off this CPU. Empty otherwise."""
    missing = missing_flags(requirement)
    return missing if missing and all(flag in OPTIONAL_FLAGS for flag in missing) else []


def check_cpu(artifact: str, manifest: Manifest) -> None:
    """Refuse ``manifest``'s artifact (named ``artifact``) if its native code uses a flag this CPU lacks; an
    artifact with no native code for this CPU (a Tenstorrent one) passes."""
    if manifest.cpu is None:
        return
    missing = missing_flags(manifest.cpu)
    if not missing:
        return
    optional = missing_optional_flags(manifest.cpu)
    if optional:
        instead = ", ".join(dict.fromkeys(OPTIONAL_FLAGS[flag] for flag in optional))
        raise CpuIsaError(
            f"{artifact}: compiled for {manifest.cpu.isa} with {', '.join(optional)}, which this CPU lacks: "
            f"recompile with {instead}"
        )
    host = host_isa()
    named = manifest.cpu.isa in ISAS and host not in (None, manifest.cpu.isa)  # the two names say it all
    lacking = "" if named else f" (it lacks {', '.join(missing)})"
    hint = f" (or compile with --cpu-isa {host})" if host else ""
    raise CpuIsaError(
        f"{artifact}: compiled for {manifest.cpu.isa}, this CPU has {host or 'neither avx2 nor avx512'}{lacking}: "
        f"recompile{hint}"
    )
