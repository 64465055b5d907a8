"""The OpenAPI document as the server behaves: the error responses routes really send.

FastAPI declares a 422 on every route with input, which agentd never sends (validation
errors are 400s, agentd.server.errors), and nothing else. Rather than repeat `responses=` on
every route, the document is post-processed once: input may be refused (400) or name
something that does not exist (404), and every error response has the OpenAI error object
as its schema. A 405 names in `Allow` the methods the document gives the path.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from agentd.server.errors import error_body

ERROR = {
    "type": "object",
    "title": "Error",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {
            "message": {"type": "string"},
            "type": {"type": "string"},
            "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "code": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }},
}
# For the routes that run a model: declared with `responses=` where the route is made.
MODEL_ERRORS: dict[int | str, dict[str, Any]] = {
    502: {"description": "The upstream model server failed"},
    503: {"description": "The model failed to load or is still loading"},
}
_INPUT_ERRORS = {"400": "The request is invalid", "404": "What the request names does not exist"}


def describe_errors(app: FastAPI) -> None:
    """Make `app.openapi()` declare the real error responses, and 405s list the allowed methods."""

    def openapi() -> dict[str, Any]:
        document = FastAPI.openapi(app)  # cached by FastAPI until the routes change
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        if "Error" not in schemas:
            _describe(document)
            schemas["Error"] = ERROR
        return document

    async def method_not_allowed(request: Request, error: HTTPException) -> JSONResponse:
        # Starlette's own `Allow` names only the first route matching the path, not all of them.
        path = request.scope.get("path", "")
        allowed = sorted({method.upper() for template, item in app.openapi()["paths"].items()
                          if _template(template).match(path) for method in item})
        headers = {**(error.headers or {}), **({"Allow": ", ".join(allowed)} if allowed else {})}
        return JSONResponse(error_body(405, str(error.detail)), 405, headers=headers)

    app.openapi = openapi
    app.add_exception_handler(405, method_not_allowed)


def _describe(document: dict[str, Any]) -> None:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if operation.get("parameters") or operation.get("requestBody"):
                for status, description in _INPUT_ERRORS.items():
                    responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                if status[0] in "45" and "content" not in response:
                    response["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    schemas = document["components"]["schemas"]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def _template(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path)) + "$")
