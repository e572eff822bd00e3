"""Exported programs handed to a lowering process without their weights: a compiler needs their shapes, not their
values, and a copy of a 1B model's weights per worker would not fit beside the build's own."""

from __future__ import annotations

import functools
import json
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch.export import ExportedProgram

TIED_FILE = "ingot_tied_weights.json"  # names sharing one tensor (a tied LM head): kept through the save


def save_weightless(exported: ExportedProgram, path: Path, keep_example_inputs: bool = True) -> None:
    """Save ``exported`` with every weight a zero-stride stand-in of its shape (a few bytes each); the program
    itself is left as it was, its lifted constants (small tensors such as rotary frequencies) included. The cpu
    target's lowering traces with the example inputs, so it keeps them; a TT program's static KV cache example
    would be the size of the cache."""
    saved_state = dict(exported.state_dict)
    saved_examples = exported._example_inputs
    stand_ins: dict[int, torch.Tensor] = {}
    tied: dict[str, str] = {}
    owners: dict[int, str] = {}

    def stand_in(name: str, tensor: torch.Tensor) -> torch.Tensor:
        owner = owners.setdefault(id(tensor), name)
        if owner != name:
            tied[name] = owner
        if id(tensor) not in stand_ins:
            slim = torch.zeros((), dtype=tensor.dtype).expand(tensor.shape)
            is_parameter = isinstance(tensor, torch.nn.Parameter)
            stand_ins[id(tensor)] = torch.nn.Parameter(slim, requires_grad=False) if is_parameter else slim
        return stand_ins[id(tensor)]

    try:
        for name, tensor in saved_state.items():
            exported.state_dict[name] = stand_in(name, tensor)
        if not keep_example_inputs:
            exported._example_inputs = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "No complete tensor found": the stand-ins share storage
            torch.export.save(exported, path, extra_files={TIED_FILE: json.dumps(tied)})
    finally:
        exported.state_dict.update(saved_state)
        exported._example_inputs = saved_examples


def load_program(path: Path, extra_files: dict[str, str] | None = None) -> ExportedProgram:
    """``torch.export.load``, with the type hints of its schema classes looked up once per class.

    torch's deserializer asks ``typing.get_type_hints`` for a schema dataclass's fields at every node, argument and
    tensor meta it reads (~50,000 times for a 30-layer step, 60% of the load); the hints of a class never change."""
    _cache_schema_type_hints()
    return torch.export.load(path, extra_files=extra_files)


@functools.cache
def _cache_schema_type_hints() -> None:
    from torch._export.serde import schema, serialize

    if getattr(serialize, "typing", None) is not typing:
        return  # a torch whose deserializer looks its hints up some other way: nothing to cache
    serialize.typing = _SchemaTyping(vars(schema))


class _SchemaTyping:
    """The ``typing`` module as torch's deserializer sees it, with ``get_type_hints`` of a schema class cached."""

    def __init__(self, schema_namespace: dict) -> None:
        self._schema_namespace = schema_namespace
        self._hints = functools.cache(lambda cls: typing.get_type_hints(cls, globalns=schema_namespace))

    def get_type_hints(self, obj, globalns=None, localns=None, include_extras=False):
        if globalns is self._schema_namespace and localns is None and not include_extras:
            return self._hints(obj)
        return typing.get_type_hints(obj, globalns=globalns, localns=localns, include_extras=include_extras)

    def __getattr__(self, name: str):
        return getattr(typing, name)


def load_with_empty_weights(path: Path) -> ExportedProgram:
    """A program saved by ``save_weightless`` for the cpu target, its weights uninitialised contiguous tensors:
    memory that is never written stays out of the process's resident set. Tied names share one tensor again."""
    extra = {TIED_FILE: ""}
    exported = load_program(path, extra_files=extra)
    tied = json.loads(extra[TIED_FILE] or "{}")
    for name, value in list(exported.state_dict.items()):
        if name not in tied:
            empty = torch.empty(value.shape, dtype=value.dtype)
            is_parameter = isinstance(value, torch.nn.Parameter)
            exported.state_dict[name] = torch.nn.Parameter(empty, requires_grad=False) if is_parameter else empty
    for name, owner in tied.items():
        exported.state_dict[name] = exported.state_dict[owner]
    return exported


def load_with_weights(path: Path, weights: Mapping[str, torch.Tensor]) -> ExportedProgram:
    """A program saved by ``save_weightless``, its weights taken from ``weights`` by name (a tied name reads its
    owner's tensor)."""
    extra = {TIED_FILE: ""}
    exported = load_program(path, extra_files=extra)
    tied = json.loads(extra[TIED_FILE] or "{}")
    for name, value in list(exported.state_dict.items()):
        tensor = weights[tied.get(name, name)]
        is_parameter = isinstance(value, torch.nn.Parameter)
        exported.state_dict[name] = torch.nn.Parameter(tensor, requires_grad=False) if is_parameter else tensor
    return exported
