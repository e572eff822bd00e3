"""`--weight-format` on a Tenstorrent target: the one format the TT plugin converts every matmul weight to.

The plugin's ``experimental_weight_dtype`` compiler option converts each parameter a matmul reads to a block format
(``bfp_bf8``, ``bfp_bf4``: tt-metal's bfloat8_b and bfloat4_b) in a const-eval function; it knows no other value,
it leaves convolution weights and every other tensor in float32, and per-tensor formats (``tt.weight_dtype_override``,
which a mixed policy such as ``accuracy`` or ``performance`` needs) are not legalized by this plugin build. So a TT
artifact takes fp32, bfp8 or bfp4, and records per tensor what its binary holds (tt/ops.py ``parameter_formats``).
Imports nothing heavy: the options and the cache key use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingot.artifacts.weight_format import WEIGHT_FORMAT_POLICIES, WeightFormat

if TYPE_CHECKING:
    from ingot.artifacts.manifest import Manifest

# --weight-format -> the plugin's experimental_weight_dtype
PLUGIN_WEIGHT_DTYPES = {WeightFormat.BFP8: "bfp_bf8", WeightFormat.BFP4: "bfp_bf4"}
# the plugin's block formats, as the TTNN MLIR names them -> ingot's names
HELD_FORMATS = {dtype: fmt for fmt, dtype in PLUGIN_WEIGHT_DTYPES.items()}


def plugin_weight_dtype(choice: str, target: str) -> str | None:
    """The ``experimental_weight_dtype`` that stores ``--weight-format choice`` on ``target`` (None: fp32, no
    conversion); a choice this plugin cannot compile is a ValueError naming the limit."""
    if choice == WeightFormat.FP32.value:
        return None
    if choice in WEIGHT_FORMAT_POLICIES:
        raise ValueError(
            f"--weight-format {choice} on {target} needs per-tensor formats, which this TT plugin cannot compile "
            "(tt.weight_dtype_override is not legalized); it converts every matmul weight to one format: bfp8 or bfp4"
        )
    fmt = WeightFormat(choice)
    if fmt not in PLUGIN_WEIGHT_DTYPES:
        raise ValueError(
            f"--weight-format {choice} on {target}: this TT plugin converts matmul weights to bfp8 or bfp4 only "
            "(its experimental_weight_dtype takes bfp_bf8, bfp_bf4)"
        )
    return PLUGIN_WEIGHT_DTYPES[fmt]


def held_weight_formats(manifest: Manifest) -> dict[str, WeightFormat]:
    """Each weight a TT artifact's binaries read in a format other than float32 -> that format (every program's)."""
    return {
        name: fmt
        for program in manifest.programs
        if program.tt is not None
        for name, fmt in program.tt.weight_formats.items()
        if fmt is not WeightFormat.FP32
    }
