"""Structured outputs: a request's ``response_format`` or vLLM's ``structured_outputs`` to the grammar its output
must follow, compiled on the request's worker thread (never on the engine's)."""

from __future__ import annotations

import json

from ingot.runtime.engine import Engine
from ingot.runtime.grammar import CompiledGrammar, GrammarSpec
from ingot.server.errors import bad_request
from ingot.server.protocol import SamplingFields

# A longer schema, regex or grammar is refused before it is compiled: compile time grows with it.
MAX_GRAMMAR_CHARS = 64 * 1024


def requested_grammar(body: SamplingFields) -> GrammarSpec | None:
    """The constraint the request asks for, or None; a malformed or contradictory one is a 400."""
    response_format = body.response_format
    if response_format is not None and response_format.type == "text":
        response_format = None
    outputs = body.structured_outputs
    if response_format is not None and outputs is not None:
        raise bad_request("give response_format or structured_outputs, not both", "structured_outputs")
    if response_format is not None:
        if response_format.type == "json_object":
            return GrammarSpec("json_object")
        if response_format.json_schema is None:
            raise bad_request('response_format of type "json_schema" needs json_schema', "response_format")
        schema = response_format.json_schema.schema_
        if schema is None:
            return GrammarSpec("json_object")
        return GrammarSpec("json_schema", _dumps(schema, "response_format"))
    if outputs is None:
        return None
    given = {name: value for name, value in outputs if value is not None}
    if len(given) != 1:
        names = ", ".join(sorted(name.rstrip("_") for name in given)) or "none"
        message = f"structured_outputs takes exactly one of json, regex, choice, grammar, json_object (given: {names})"
        raise bad_request(message, "structured_outputs")
    (name, value), param = given.popitem(), "structured_outputs"
    if name == "json_":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as error:
                raise bad_request(f"structured_outputs.json is not JSON: {error}", param) from None
        return GrammarSpec("json_schema", _dumps(value, param), param)
    if name == "json_object":
        return GrammarSpec("json_object", param=param) if value else None
    if name == "choice":
        return GrammarSpec("choice", json.dumps(value), param)
    return GrammarSpec(name, value, param)


def compile_grammar(engine: Engine, spec: GrammarSpec | None) -> CompiledGrammar | None:
    """CPU work of milliseconds on a first use, a cache lookup after: call it on a worker thread. A grammar longer
    than ``MAX_GRAMMAR_CHARS`` is refused before it is compiled."""
    if spec is None:
        return None
    if len(spec.text) > MAX_GRAMMAR_CHARS:
        message = (
            f"{spec.param} makes a grammar of {len(spec.text)} characters; at most {MAX_GRAMMAR_CHARS} are allowed"
        )
        raise bad_request(message, spec.param)
    return engine.grammars.compile(spec)


def _dumps(schema: object, param: str) -> str:
    if not isinstance(schema, (dict, bool)):
        raise bad_request(f"a JSON schema is an object, not {type(schema).__name__}", param)
    return json.dumps(schema, sort_keys=True)  # one text per schema, whatever the key order: one cache entry
