"""The tool registry over HTTP: a listing, one POST route per tool (with its schema in OpenAPI).

Arguments come as a JSON object, or as multipart/form-data where image and file arguments
are uploads and other fields are JSON values or plain strings (`curl -F image=@cat.png -F
width=64`). Results are `ToolResult.to_dict()`: images and files carry their stored id and,
unless `?inline=false`, their bytes in base64. Bad arguments are a 400 and an unknown tool a
404, both in the OpenAI error shape; a tool that ran and failed is a 200 with `is_error`.
`create_tool_app` is the standalone tool server of `agentd tools serve`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import jsonschema
from fastapi import APIRouter, FastAPI, Request
from starlette.datastructures import UploadFile

from agentd.server.auth import BearerGuard, api_key_guard
from agentd.server.errors import APIError, install_error_handlers
from agentd.server.files import file_router
from agentd.server.openapi import describe_errors
from tools.base import Tool, ToolArgumentError
from tools.media import File, Image
from tools.registry import ToolRegistry


def tool_router(registry: ToolRegistry) -> APIRouter:
    """Routes relative to where they are mounted: `GET ""`, `GET /{name}`, `POST /{name}`."""
    router = APIRouter(tags=["tools"])

    @router.get("", summary="List the tools")
    async def list_tools() -> dict[str, Any]:
        return {"object": "list", "data": [found.info() for found in registry]}

    for found in registry:
        router.add_api_route(f"/{found.name}", _endpoint(registry, found.name), methods=["POST"],
                             summary=found.description.splitlines()[0], openapi_extra=_openapi_body(found),
                             operation_id=f"call_{found.name}", name=f"tool:{found.name}")
        # Its path also matches `GET /{name}`: said here so that the document lists what the path answers.
        router.add_api_route(f"/{found.name}", _description(registry, found.name), methods=["GET"],
                             summary=f"Describe {found.name}", operation_id=f"describe_{found.name}")

    # Tools added to the registry after the routes were made (remote, MCP) answer here.
    @router.get("/{name}", summary="Describe one tool", operation_id="tool_description")
    async def describe_tool(name: str) -> dict[str, Any]:
        return _tool(registry, name).info()

    @router.post("/{name}", summary="Call a tool by name", operation_id="tool_call", openapi_extra={
        "requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}}})
    async def call_any_tool(name: str, request: Request):
        return await _call(registry, name, request)

    return router


def _description(registry: ToolRegistry, name: str):
    async def describe_this_tool() -> dict[str, Any]:
        return _tool(registry, name).info()

    return describe_this_tool


def _endpoint(registry: ToolRegistry, name: str):
    async def call_tool(request: Request):
        return await _call(registry, name, request)

    return call_tool


async def _call(registry: ToolRegistry, name: str, request: Request):
    found = _tool(registry, name)
    try:
        arguments = await _arguments(found, request)
    except ToolArgumentError as error:
        raise APIError(400, str(error), code="invalid_tool_arguments") from None
    _check_schema(found, arguments)
    # Over the network a caller may not name local paths: only uploads, data URLs and file ids.
    context = replace(registry.context, allow_local_paths=False)
    result = await found.invoke(arguments, context=context, call_id=request.headers.get("x-tool-call-id"))
    if result.error is not None and result.error.kind == "invalid_arguments":
        errors = result.error.details.get("errors") or [{}]
        param = ".".join(str(part) for part in errors[0].get("loc", ())) or None
        raise APIError(400, result.error.message, param=param, code="invalid_tool_arguments")
    inline = request.query_params.get("inline", "true").lower() not in ("false", "0", "no")
    return result.to_dict(inline=inline, context=context)


async def _arguments(found: Tool, request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        properties = found.parameters.get("properties", {})
        arguments: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                cls = Image if properties.get(key, {}).get("x-agentd-type") == "image" else File
                data = await value.read()
                try:
                    arguments[key] = cls(data, value.content_type or "application/octet-stream", value.filename)
                except ValueError as error:
                    raise ToolArgumentError(f"{key}: {error}") from None
            else:
                arguments[key] = _form_value(value, properties.get(key, {}))
        return arguments
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as error:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        raise ToolArgumentError(f"the request body is not valid JSON ({error})") from None
    if not isinstance(body, dict):
        raise ToolArgumentError("the request body must be a JSON object of arguments")
    return body


def _check_schema(found: Tool, arguments: dict[str, Any]) -> None:
    """Hold the arguments to the schema the document publishes, before the tool's own (lax) checks.

    Pydantic would take `true` for a number; a client reading the document must not find that
    it may. Image and file arguments are left to the tool, which resolves uploads, ids and URLs.
    """
    problems = [(_where(problem), problem.message) for problem in _validator(found).iter_errors(arguments)]
    if problems:
        problems.sort()
        described = "; ".join(f"{where or 'arguments'}: {message}" for where, message in problems)
        raise APIError(400, f"invalid arguments — {described}", param=problems[0][0] or None,
                       code="invalid_tool_arguments")


@functools.lru_cache(maxsize=512)
def _validator(found: Tool) -> jsonschema.Draft202012Validator:
    """Built once per tool (not per call): the published schema, image and file arguments left open."""
    schema = found.parameters
    relaxed = {**schema, "properties": {key: ({} if "x-agentd-type" in prop else prop)
                                        for key, prop in schema.get("properties", {}).items()}}
    return jsonschema.Draft202012Validator(relaxed)


def _where(problem: jsonschema.ValidationError) -> str:
    path = list(problem.absolute_path)
    if problem.validator == "required" and isinstance(problem.instance, dict):
        path += [name for name in problem.validator_value if name not in problem.instance][:1]
    return ".".join(map(str, path))


def _form_value(value: str, schema: dict[str, Any]) -> Any:
    if schema.get("type") == "string":
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _tool(registry: ToolRegistry, name: str) -> Tool:
    if name not in registry:
        raise APIError(404, f"there is no tool named {name!r}; available: {', '.join(registry.names) or 'none'}",
                       param="name", code="tool_not_found")
    return registry.get(name)


def _openapi_body(found: Tool) -> dict[str, Any]:
    # Over HTTP a file or image is a stored file id or a data: URL (local paths are refused), or an upload.
    schema = {**found.parameters, "properties": {
        key: ({**prop, "pattern": "^(file-|data:)"} if "x-agentd-type" in prop else prop)
        for key, prop in found.parameters.get("properties", {}).items()}}
    multipart = {**schema, "properties": {
        key: ({"type": "string", "format": "binary", "description": prop.get("description", "")}
              if "x-agentd-type" in prop else prop) for key, prop in schema.get("properties", {}).items()}}
    return {"requestBody": {"required": bool(schema.get("required")), "content": {
        "application/json": {"schema": schema}, "multipart/form-data": {"schema": multipart}}}}


def create_tool_app(registry: ToolRegistry, *, api_keys: Sequence[str] = (), loopback_only: bool = True) -> FastAPI:
    """The standalone tool server: `/tools`, `/files`, and MCP at `/mcp`."""
    from tools.mcp_server import streamable_http

    endpoint, manager = streamable_http(registry, loopback_only=loopback_only and not api_keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with manager.run():
            yield

    app = FastAPI(title="agentd tools", lifespan=lifespan)
    install_error_handlers(app)
    guarded = APIRouter(**api_key_guard(api_keys))
    guarded.include_router(tool_router(registry), prefix="/tools")
    if registry.context.file_store is not None:
        guarded.include_router(file_router(registry.context.file_store))
    app.include_router(guarded)
    app.add_route("/mcp", BearerGuard(endpoint, api_keys))
    describe_errors(app)
    return app
