"""ingot's native library: its own C++ kernels, for what inductor and oneDNN do not do well, and the op that runs
a compiled program without holding Python's interpreter lock. Built once per machine at compile time and
copied into every cpu artifact, so serving needs no compiler."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import platformdirs
import torch

LIBRARY_NAME = "ingot_kernels"
SOURCES = sorted(Path(__file__).parent.glob("*.cpp"))
BUILD_DIR = platformdirs.user_cache_path("ingot") / "kernels"
LIBRARY_FILE = BUILD_DIR / f"{LIBRARY_NAME}.so"
DECODE_HEAD_DIMS = (16, 32, 64, 128)  # what paged_decode_attention takes with either vector width (8 or 16)

def build_kernels() -> Path:
    """Build the library once per machine (torch rebuilds it when its sources or flags change), load its ops
    into this process and return the library file."""
    from torch.utils import cpp_extension

    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    sources = [str(source) for source in SOURCES]
    cpp_extension.load(
        LIBRARY_NAME, sources, extra_cflags=_cflags(), build_directory=str(BUILD_DIR), is_python_module=False
    )
    _register_shapes()
    return LIBRARY_FILE


def add_to_artifact(workdir: Path) -> list[str]:
    """Build the library and copy it into the artifact being built; returns the paths its programs list."""
    library = build_kernels()
    (workdir / "kernels").mkdir(exist_ok=True)
    shutil.copyfile(library, workdir / "kernels" / library.name)
    return [f"kernels/{library.name}"]


def load_kernels() -> None:
    """Load the library ``build_kernels`` built, for tracing and lowering programs in another process."""
    torch.ops.load_library(str(LIBRARY_FILE))
    _register_shapes()


@functools.cache  # once per process: torch refuses a second registration
def _register_shapes() -> None:
    """What torch.export needs to trace a call without running it."""

    @torch.library.register_fake("ingot::paged_decode_attention")
    def _(query, kv_cache, layer, block_tables, context_lens, scale):
        return torch.empty_like(query)

    @torch.library.register_fake("ingot::packed_linear")
    def _(input, packed_weight, out_features, bias):
        return input.new_empty((*input.shape[:-1], out_features))


def _cflags() -> list[str]:
    """The vector ISA inductor picks for its own kernels on this machine (ATen's Vectorized is built for it):
    like inductor's code, the library is for the machine that compiles, as artifacts are."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    isa = pick_vec_isa()
    return ["-O3", "-fopenmp", *(f"-D{macro}" for macro in isa.build_macro()), *isa.build_arch_flags().split()]
