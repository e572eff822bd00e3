"""Inductor's code for one vector ISA (``--cpu-isa``), whatever CPU compiles it.

Left alone, inductor compiles for the compiling machine: ``-march=native``, and the widest ISA it finds
(``pick_vec_isa()``: on a Sapphire Rapids host AVX-512 plus ``-mavx512bf16 -mavx512vnni -mamx-tile ...``). Here a
lowering gets exactly the ISA's table entry (ingot.artifacts.cpu_isa): ``cpp.simdlen`` its vector width,
``cpp.march`` its x86-64 level, and as inductor's ISA its portable baseline: AVX2 (``-mavx2 -mfma -mf16c``) or
AVX-512 F/BW/VL/DQ with FMA, never the bf16, VNNI or AMX extensions, which float32 programs do not use and some
machines with AVX-512 lack (or list and refuse at run time, as some VMs do with AMX).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

from torch._inductor import config, cpu_vec_isa

from ingot.artifacts.cpu_isa import ISAS


class _Avx512Baseline(cpu_vec_isa.VecAVX512):
    """Inductor's AVX-512 without the flags it adds when this CPU has avx512_bf16."""

    def __bool__(self) -> bool:  # only the build check, not the bf16 probe that widens the flags
        return cpu_vec_isa.VecISA.__bool__(self)

    def build_arch_flags(self) -> str:
        return self._arch_flags


INDUCTOR_ISAS = {"avx2": cpu_vec_isa.VecAVX2(), "avx512": _Avx512Baseline()}


@contextmanager
def vector_isa(name: str | None) -> Iterator[None]:
    """Inductor lowers for ISA ``name`` inside (None: for this machine, inductor's own choice).

    Inductor asks ``pick_vec_isa()`` wherever it generates or compiles code; that function picks among
    ``valid_vec_isa_list()``, which here holds only the chosen ISA (if this machine's compiler builds it). Both
    config values are in inductor's cache keys, so no code cached for another ISA is reused."""
    if name is None:
        yield
        return
    isa, inductor_isa = ISAS[name], INDUCTOR_ISAS[name]
    valid = [inductor_isa] if inductor_isa else []  # bool: inductor's check that the compiler builds it
    with (
        config.patch({"cpp.simdlen": isa.bit_width, "cpp.march": isa.march}),
        mock.patch.object(cpu_vec_isa, "valid_vec_isa_list", lambda: valid),
    ):
        yield
