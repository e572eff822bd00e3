"""Every error leaves the server in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``.

Handlers are keyed by exception type so each failure maps to one status; anything unexpected is a bug, answered
with a generic 500 by ``InternalErrorMiddleware``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ingot.errors import ContextLengthError, RequestError, SamplingParamsError
from ingot.server.protocol import ErrorResponse

INVALID_REQUEST = "invalid_request_error"


class APIError(Exception):
    """An error the server answers deliberately, with its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers


def error_body(message: str, type: str = INVALID_REQUEST, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _EscapedJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a message that echoes a request's text (a field name, a model)
    can hold a lone surrogate, which UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


def error_response(error: APIError) -> JSONResponse:
    body = error_body(error.message, error.type, error.param, error.code)
    return _EscapedJSONResponse(body, status_code=error.status_code, headers=error.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


# What the schema promises for the API's routes, so clients and fuzzers know every status they can get.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Invalid or unsupported parameters, malformed JSON, or a prompt beyond the context"),
        (401, "Missing or wrong API key (when the server has one)"),
        (404, "Unknown model"),
        (413, "Request body over the size limit"),
        (429, "Queue full; retry after the Retry-After header's seconds"),
    )
}

DETECTION_ERROR_RESPONSES = {
    **ERROR_RESPONSES,
    415: {"model": ErrorResponse, "description": "Not a JPEG, PNG or WebP image, or not a multipart or JSON body"},
}


def document_errors(app: FastAPI, parsed_bodies: dict[str, Any]) -> None:
    """FastAPI lists a 422 for every route with a body; this server answers 400 instead (see ``_validation_error``).
    ``parsed_bodies``: the schemas of the bodies routes parse themselves (``bodies.schema_components``)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(parsed_bodies)
            for path in schema["paths"].values():
                for operation in path.values():
                    operation["responses"].pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(SamplingParamsError, _sampling_params_error)
    app.add_exception_handler(RequestError, _request_error)


async def _api_error(request: Request, error: APIError) -> JSONResponse:
    return error_response(error)


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI answers 422 with its own shape; OpenAI clients expect 400 naming the offending parameter."""
    errors = error.errors()
    first = max(errors, key=lambda e: len(e["loc"]))  # the one that got furthest is the most specific
    param = _param(first["loc"])
    if first["type"] == "json_invalid":
        reason = first.get("ctx", {}).get("error", "invalid JSON")
        message, param = f"the request body is not valid JSON: {reason}", None
    elif first["type"] == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    elif param:
        # A union (prompt, stop, content) fails once per member: say what each member wanted.
        reasons = dict.fromkeys(e["msg"] for e in errors if _param(e["loc"]) == param)
        message = f"{param}: {'; or '.join(reasons)}"
    else:
        message = f"the request body is invalid: {first['msg']}"
    return error_response(bad_request(message, param))


def _param(loc: tuple) -> str | None:
    """An error's location as a dotted parameter path, without the union members pydantic names in it
    (``str``, ``list[int]``, a model's class name)."""
    parts = [str(p) for p in loc if p != "body" and not _is_union_member(p)]
    return ".".join(parts) or None


def _is_union_member(part: str | int) -> bool:
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part in ("str", "int", "float", "bool"))


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    """Routing failures: an unknown path (404) or a method the path does not take (405)."""
    if error.status_code == 404:
        message = f"Invalid URL ({request.method} {request.url.path})"
    elif error.status_code == 405:
        message = f"Method {request.method} is not allowed for {request.url.path}"
    else:
        message = str(error.detail)
    return error_response(APIError(error.status_code, message, headers=error.headers))


async def _sampling_params_error(request: Request, error: SamplingParamsError) -> JSONResponse:
    return error_response(bad_request(str(error), error.param))


async def _request_error(request: Request, error: RequestError) -> JSONResponse:
    code = "context_length_exceeded" if isinstance(error, ContextLengthError) else None
    return error_response(bad_request(str(error), error.param, code))

