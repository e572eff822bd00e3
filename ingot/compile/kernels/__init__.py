"""ingot's native library: its own C++ kernels, for what inductor and oneDNN do not do well, and the op that runs
a compiled program without holding Python's interpreter lock. Built once per machine and vector ISA (``--cpu-isa``:
its flags come from the ISA, not from the machine) at compile time and copied into every cpu artifact, so serving
needs no compiler."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import platformdirs
import torch

from ingot.artifacts.cpu_isa import ISAS, host_isa

LIBRARY_NAME = "ingot_kernels"  # the library's file in an artifact: kernels/ingot_kernels.so
SOURCES = sorted(Path(__file__).parent.glob("*.cpp"))
BUILD_ROOT = platformdirs.user_cache_path("ingot") / "kernels"  # a directory per ISA below it
DECODE_HEAD_DIMS = (16, 32, 64, 128)  # what paged_decode_attention takes with either vector width (8 or 16)


def build_kernels(isa: str | None = None) -> Path:
    """Build the library for vector ISA ``isa`` (None: this CPU's) once per machine (torch rebuilds it when its
    sources or flags change), load its ops into this process and return the library file."""
    from torch.utils import cpp_extension

    isa = isa or host_isa()
    sources = [str(source) for source in SOURCES]
    build_dir = library_file(isa).parent
    build_dir.mkdir(parents=True, exist_ok=True)
    # one name per ISA: torch renames a library rebuilt under the same name with other flags in one process
    cpp_extension.load(
        library_file(isa).stem, sources, extra_cflags=_cflags(isa), build_directory=str(build_dir),
        is_python_module=False,
    )  # fmt: skip
    _register_shapes()
    return library_file(isa)


def library_file(isa: str) -> Path:
    """Where the library for ``isa`` is built."""
    return BUILD_ROOT / isa / f"{LIBRARY_NAME}_{isa}.so"


def add_to_artifact(workdir: Path, isa: str) -> list[str]:
    """Build the library for ``isa`` and copy it into the artifact being built; returns the paths its programs
    list."""
    library = build_kernels(isa)
    (workdir / "kernels").mkdir(exist_ok=True)
    shutil.copyfile(library, workdir / "kernels" / f"{LIBRARY_NAME}.so")
    return [f"kernels/{LIBRARY_NAME}.so"]


def load_kernels(isa: str | None) -> None:
    """Load the library ``build_kernels(isa)`` built, for tracing and lowering programs in another process."""
    torch.ops.load_library(str(library_file(isa or host_isa())))
    _register_shapes()


@functools.cache  # once per process: torch refuses a second registration
def _register_shapes() -> None:
    """What torch.export needs to trace a call without running it."""

    @torch.library.register_fake("ingot::paged_decode_attention")
    def _(query, kv_cache, layer, block_tables, context_lens, scale):
        return torch.empty_like(query)

    @torch.library.register_fake("ingot::packed_linear")
    def _(input, packed_weight, out_features, bias, format="fp32", bf16_inputs=False):
        return input.new_empty((*input.shape[:-1], out_features))

    @torch.library.register_fake("ingot::packed_rows")
    def _(packed_weight, ids, format):
        return packed_weight.new_empty((*ids.shape, packed_weight.shape[1]), dtype=torch.float32)


def _cflags(isa: str) -> list[str]:
    """The vector ISA's, as inductor's programs of the artifact get them (ingot.compile.cpu.isa): ATen's
    ``Vectorized`` for its width, and code for its x86-64 level, whatever this machine has beyond it."""
    spec = ISAS[isa]
    return ["-O3", "-fopenmp", f"-D{spec.capability_macro}", f"-march={spec.march}"]
