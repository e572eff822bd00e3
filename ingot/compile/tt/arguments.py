"""Mark a TT program's weights as parameters, so that TT-MLIR const-evaluates them and converts matmul weights.

TT-MLIR treats every function argument as a per-call input (``ttcore.argument_type<input>``) unless the frontend
says otherwise. tt-xla says so with an identity ``stablehlo.custom_call @tt.mark_argument`` on the argument whose
``mhlo.frontend_attributes`` carry ``ttcore.argument_type`` (``input``, ``parameter`` or ``constant``) and
``ttir.name``; the plugin lifts them onto the argument and drops the call. A parameter is loaded once: the compiler
hoists what depends only on parameters into const-eval functions, and ``experimental_weight_dtype`` converts the
parameters that feed a matmul. Imported by the plugin worker only (it imports jax).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
from jax._src.interpreters import mlir
from jax._src.lib.mlir import ir
from jax.extend.core import Primitive

MARK_ARGUMENT = "tt.mark_argument"
PARAMETER, CONSTANT = "parameter", "constant"

_mark_argument = Primitive("tt_mark_argument")
_mark_argument.def_abstract_eval(lambda x, *, argument_type, name: x)


def _lower_mark_argument(ctx, x, *, argument_type: str, name: str):
    attributes = {"ttcore.argument_type": ir.StringAttr.get(argument_type), "ttir.name": ir.StringAttr.get(name)}
    call = mlir.custom_call(
        MARK_ARGUMENT,
        result_types=[x.type],
        operands=[x],
        api_version=0,
        extra_attributes={"mhlo.frontend_attributes": ir.DictAttr.get(attributes)},
    )
    return call.results


mlir.register_lowering(_mark_argument, _lower_mark_argument)


def mark_argument(x: jax.Array, argument_type: str, name: str) -> jax.Array:
    """``x`` unchanged, marked for TT-MLIR as an argument of ``argument_type`` called ``name``."""
    return _mark_argument.bind(x, argument_type=argument_type, name=name)


def with_marked_weights(fn: Callable, weight_names: Sequence[str]) -> Callable:
    """``fn(states, inputs)`` (torchax's form) with each named weight marked a parameter and each lifted constant
    after them a constant, as tt-xla marks a module's parameters and constants; the inputs stay inputs."""

    def marked(states, inputs):
        kinds = [(PARAMETER, name) for name in weight_names]
        kinds += [(CONSTANT, f"constant_{i}") for i in range(len(states) - len(weight_names))]
        return fn([mark_argument(s, kind, name) for s, (kind, name) in zip(states, kinds)], inputs)

    return marked
