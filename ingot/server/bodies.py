"""Request bodies parsed and validated on a worker thread, after their sizes are checked (``limits.py``).

FastAPI would parse and validate a body on the event loop before the handler runs: for a 4 MB body of a million
prompts that held every other request, /health included, for most of a second. The routes that take these bodies
declare them to the OpenAPI schema with ``documented_body``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from ingot.server.errors import bad_request

M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model: type[M], check_sizes: Callable[[dict], None]) -> M:
    """The body as ``model``; malformed JSON, a size over a limit or an invalid field is a 400."""
    raw = await request.body()
    return await anyio.to_thread.run_sync(_parse, raw, model, check_sizes)


def _parse(raw: bytes, model: type[M], check_sizes: Callable[[dict], None]) -> M:
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as error:  # JSONDecodeError, bad UTF-8, or NaN/Infinity, which JSON does not have
        reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        raise bad_request(f"the request body is not valid JSON: {reason}") from None
    if isinstance(data, dict):
        check_sizes(data)
    try:
        return model.model_validate(data)
    except ValidationError as error:  # named by the app's handler, as FastAPI's own validation errors are
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in error.errors()]) from None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that parses ``model`` itself; ``schema_components`` adds its schemas."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def schema_components(models: list[type[BaseModel]]) -> dict[str, Any]:
    """The OpenAPI component schemas of ``models`` and of every model they contain."""
    components: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    return components
