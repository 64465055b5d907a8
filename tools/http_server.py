"""The registry over HTTP: a listing, one POST route per tool (with its schema in OpenAPI), files.

Arguments come as a JSON object, or as multipart/form-data where image and file arguments
are uploads and other fields are JSON values or plain strings (`curl -F image=@cat.png -F
width=64`). Results are `ToolResult.to_dict()`: images and files carry their stored id and,
unless `?inline=false`, their bytes in base64. Bad arguments are a 400 and an unknown tool a
404, both in the OpenAI error shape; a tool that ran and failed is a 200 with `is_error`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi import File as FormFile
from fastapi import UploadFile as FormUpload
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from tools.base import Tool, ToolArgumentError
from tools.files import FileNotFound, FileStore
from tools.media import File, Image
from tools.registry import ToolRegistry


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   type: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}}, status)


def tool_router(registry: ToolRegistry, *, dependencies: Sequence[Any] = ()) -> APIRouter:
    """Routes relative to where they are mounted: `GET ""`, `GET /{name}`, `POST /{name}`."""
    router = APIRouter(dependencies=[Depends(d) for d in dependencies], tags=["tools"])

    @router.get("", summary="List the tools")
    async def list_tools() -> dict[str, Any]:
        return {"object": "list", "data": [found.info() for found in registry]}

    @router.get("/{name}", summary="Describe one tool")
    async def describe_tool(name: str):
        if name not in registry:
            return _unknown(registry, name)
        return registry.get(name).info()

    for found in registry:
        router.add_api_route(f"/{found.name}", _endpoint(registry, found.name), methods=["POST"],
                             summary=found.description.splitlines()[0], openapi_extra=_openapi_body(found),
                             operation_id=f"call_{found.name}", name=f"tool:{found.name}")

    # Tools added to the registry after the routes were made (remote, MCP) still answer here.
    router.add_api_route("/{name}", _dynamic_endpoint(registry), methods=["POST"], include_in_schema=False)
    return router


FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


def file_router(store: FileStore, *, dependencies: Sequence[Any] = (), max_upload_bytes: int = 512 * 2**20,
                validators: Mapping[str, Callable[[bytes, str], object]] | None = None) -> APIRouter:
    """OpenAI's Files API: upload, list, retrieve, content, delete.

    `validators` check an upload of a given purpose (`fine-tune` JSONL, say) and raise
    ValueError with a message naming what is wrong; the upload is then refused with a 400.
    """
    router = APIRouter(dependencies=[Depends(d) for d in dependencies], tags=["files"])
    validators = dict(validators or {})

    @router.post("/files")
    async def upload_file(file: FormUpload = FormFile(...), purpose: str = Form(...)):
        if purpose not in FILE_PURPOSES:
            return error_response(400, f"purpose must be one of {', '.join(FILE_PURPOSES)}; got {purpose!r}",
                                  param="purpose")
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            return error_response(413, f"the file is larger than the {max_upload_bytes // 2**20} MiB upload limit",
                                  param="file", code="file_too_large")
        name = file.filename or "upload"
        if purpose in validators:
            try:
                await asyncio.to_thread(validators[purpose], data, name)
            except ValueError as error:
                return error_response(400, f"invalid {purpose} file: {error}", param="file",
                                      code="invalid_file_format")
        return store.put(data, name, purpose=purpose, mime_type=file.content_type).to_openai()

    @router.get("/files")
    async def list_files(purpose: str | None = None, limit: int = Query(10000, ge=1, le=10000),
                         order: Literal["asc", "desc"] = "desc", after: str | None = None):
        try:
            found = store.list(purpose, limit + 1, after=after, order=order)
        except FileNotFound as error:
            return error_response(404, str(error), param="after", code="file_not_found")
        page = [stored.to_openai() for stored in found[:limit]]
        return {"object": "list", "data": page, "has_more": len(found) > limit,
                "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}

    @router.get("/files/{file_id}")
    async def retrieve_file(file_id: str):
        try:
            return store.get(file_id).to_openai()
        except FileNotFound as error:
            return error_response(404, str(error), param="file_id", code="file_not_found")

    @router.delete("/files/{file_id}")
    async def delete_file(file_id: str):
        try:
            store.delete(file_id)
        except FileNotFound as error:
            return error_response(404, str(error), param="file_id", code="file_not_found")
        return {"id": file_id, "object": "file", "deleted": True}

    @router.get("/files/{file_id}/content")
    async def file_content(file_id: str):
        try:
            stored = store.get(file_id)
        except FileNotFound as error:
            return error_response(404, str(error), param="file_id", code="file_not_found")
        return Response(store.read(file_id), media_type=stored.mime_type,
                        headers={"Content-Disposition": f'attachment; filename="{stored.filename}"'})

    return router


def _endpoint(registry: ToolRegistry, name: str):
    async def call_tool(request: Request):
        return await _call(registry, name, request)

    return call_tool


def _dynamic_endpoint(registry: ToolRegistry):
    async def call_any_tool(name: str, request: Request):
        return await _call(registry, name, request)

    return call_any_tool


async def _call(registry: ToolRegistry, name: str, request: Request):
    if name not in registry:
        return _unknown(registry, name)
    found = registry.get(name)
    try:
        arguments = await _arguments(found, request)
    except ToolArgumentError as error:
        return error_response(400, str(error), code="invalid_tool_arguments")
    # Over the network a caller may not name local paths: only uploads, data URLs and file ids.
    context = replace(registry.context, allow_local_paths=False)
    result = await found.invoke(arguments, context=context, call_id=request.headers.get("x-tool-call-id"))
    if result.error is not None and result.error.kind == "invalid_arguments":
        errors = result.error.details.get("errors") or [{}]
        param = ".".join(str(part) for part in errors[0].get("loc", ())) or None
        return error_response(400, result.error.message, param=param, code="invalid_tool_arguments")
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
    except json.JSONDecodeError as error:
        raise ToolArgumentError(f"the request body is not valid JSON ({error})") from None
    if not isinstance(body, dict):
        raise ToolArgumentError("the request body must be a JSON object of arguments")
    return body


def _form_value(value: str, schema: dict[str, Any]) -> Any:
    if schema.get("type") == "string":
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _unknown(registry: ToolRegistry, name: str) -> JSONResponse:
    return error_response(404, f"there is no tool named {name!r}; available: {', '.join(registry.names) or 'none'}",
                          param="name", code="tool_not_found")


def _openapi_body(found: Tool) -> dict[str, Any]:
    schema = found.parameters
    multipart = {**schema, "properties": {
        key: ({"type": "string", "format": "binary", "description": prop.get("description", "")}
              if "x-agentd-type" in prop else prop) for key, prop in schema.get("properties", {}).items()}}
    return {"requestBody": {"required": bool(schema.get("required")), "content": {
        "application/json": {"schema": schema}, "multipart/form-data": {"schema": multipart}}}}


def bearer_ok(authorization: str, keys: Sequence[str]) -> bool:
    """True when no keys are configured or the header carries one of them (constant-time compare)."""
    if not keys:
        return True
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and any(secrets.compare_digest(token, key) for key in keys)


UNAUTHORIZED = "Incorrect or missing API key. Send it as `Authorization: Bearer <key>`."


class BearerGuard:
    """Wrap a plain ASGI app (the MCP endpoint) with the same bearer check as the routes.

    A class, not a closure: Starlette treats a plain function given to `add_route` as a
    request → response handler rather than as an ASGI app.
    """

    def __init__(self, asgi_app, keys: Callable[[], Sequence[str]]):
        self.asgi_app = asgi_app
        self.keys = keys

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            if not bearer_ok(header, self.keys()):
                response = error_response(401, UNAUTHORIZED, code="invalid_api_key", type="authentication_error")
                await response(scope, receive, send)
                return
        await self.asgi_app(scope, receive, send)


def create_tool_app(registry: ToolRegistry, *, api_keys: Sequence[str] = (), loopback_only: bool = True) -> FastAPI:
    """The standalone tool server of `agentd tools serve`: `/tools`, `/files`, and MCP at `/mcp`."""
    from tools.mcp_server import streamable_http

    def require_key(request: Request) -> None:
        if not bearer_ok(request.headers.get("authorization", ""), api_keys):
            raise HTTPException(401, UNAUTHORIZED)

    endpoint, manager = streamable_http(registry, loopback_only=loopback_only and not api_keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with manager.run():
            yield

    app = FastAPI(title="agentd tools", lifespan=lifespan)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        kind = "authentication_error" if error.status_code == 401 else "invalid_request_error"
        return error_response(error.status_code, str(error.detail), type=kind)

    app.include_router(tool_router(registry, dependencies=[require_key]), prefix="/tools")
    if registry.context.file_store is not None:
        app.include_router(file_router(registry.context.file_store, dependencies=[require_key]))
    app.add_route("/mcp", BearerGuard(endpoint, lambda: api_keys))
    return app
