"""Import torchax 0.0.13 on torch 2.13, which removed named-tensor (Dimname) overloads torchax still names.

At import time torchax builds tables keyed by ``torch.ops.aten.<op>.<overload>``; 22 of those lookups
(21 distinct overloads, ``prod.dim_Dimname`` first) raise AttributeError on torch 2.13. While torchax
imports, and only then, a lookup of exactly one of these overloads returns an inert placeholder that
matches no real operator (no graph ever calls a Dimname overload: torch.export emits positional
dims). Every other missing overload still raises. Nothing in site-packages is edited.
"""

from __future__ import annotations

import contextlib
import sys

import torch
import torch._ops

# aten overloads torchax 0.0.13 names at import that torch 2.13 no longer has.
REMOVED_OVERLOADS = frozenset(
    {
        "aten::prod.dim_Dimname",
        "aten::index_copy.dimname",
        "aten::index_copy_.dimname",
        "aten::all.dimname",
        "aten::all.dimname_out",
        "aten::index_add.dimname",
        "aten::index_fill.Dimname_Scalar",
        "aten::index_fill.Dimname_Tensor",
        "aten::index_fill_.Dimname_Scalar",
        "aten::index_fill_.Dimname_Tensor",
        "aten::norm.names_ScalarOpt_dim",
        "aten::norm.names_ScalarOpt_dim_dtype",
        "aten::norm.names_dtype_out",
        "aten::norm.names_out",
        "aten::std.names_dim",
        "aten::std.names_out",
        "aten::std.correction_names",
        "aten::std.correction_names_out",
        "aten::std_mean.names_dim",
        "aten::std_mean.correction_names",
        "aten::unbind.Dimname",
    }
)


class RemovedOverload:
    """Stands in for an overload this torch no longer has: hashable, never equal to a real operator."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}: removed in torch {torch.__version__}>"


@contextlib.contextmanager
def _tolerate_removed_overloads():
    packet = torch._ops.OpOverloadPacket
    original = packet.__getattr__

    def getattr_(self, key: str):
        try:
            return original(self, key)
        except AttributeError:
            name = f"{self._qualified_op_name}.{key}"
            if name not in REMOVED_OVERLOADS:
                raise
            return RemovedOverload(name)

    packet.__getattr__ = getattr_
    try:
        yield
    finally:
        packet.__getattr__ = original


def import_torchax():
    """Import and return ``torchax`` (with ``torchax.export`` loaded) on this torch."""
    if "torchax.export" in sys.modules:
        return sys.modules["torchax"]
    with _tolerate_removed_overloads():
        import torchax
        import torchax.export  # noqa: F401
    return torchax
