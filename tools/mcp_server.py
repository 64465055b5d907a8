"""The registry as an MCP server (official `mcp` SDK, low-level server): stdio or streamable HTTP."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from tools.registry import ToolRegistry
from tools.results import ArtifactPart, JsonPart, TextPart, ToolResult

# agentd's own flags travel in `_meta`, so an agentd that imports these tools keeps them.
META_PREFIX = "agentd/"
LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]


def mcp_server(registry: ToolRegistry, name: str = "agentd") -> Server:
    context = replace(registry.context, allow_local_paths=False)

    async def list_tools(ctx: ServerRequestContext, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[
            types.Tool(name=found.name, description=found.description, input_schema=found.parameters,
                       meta={f"{META_PREFIX}{flag}": getattr(found, flag)
                             for flag in ("requires_approval", "long_running", "timeout")})
            for found in registry])

    async def call_tool(ctx: ServerRequestContext, params: types.CallToolRequestParams) -> types.CallToolResult:
        result = await registry.invoke(params.name, params.arguments or {}, context=context)
        return to_mcp_result(result, context)

    from importlib.metadata import version

    return Server(name, version=version("agentd"), on_list_tools=list_tools, on_call_tool=call_tool)


def to_mcp_result(result: ToolResult, context) -> types.CallToolResult:
    if result.error is not None:
        return types.CallToolResult(content=[types.TextContent(type="text", text=result.observation())],
                                    is_error=True)
    content: list[types.ContentBlock] = []
    for part in result.content:
        if isinstance(part, TextPart):
            content.append(types.TextContent(type="text", text=part.text))
        elif isinstance(part, JsonPart):
            content.append(types.TextContent(type="text", text=json.dumps(part.value, ensure_ascii=False)))
        elif isinstance(part, ArtifactPart):
            data = base64.b64encode(part.load(context).data).decode()
            if part.kind == "image":
                content.append(types.ImageContent(type="image", data=data, mime_type=part.mime_type))
            else:
                content.append(types.EmbeddedResource(type="resource", resource=types.BlobResourceContents(
                    uri=f"agentd://files/{part.file_id or part.filename}", mime_type=part.mime_type, blob=data)))
    structured = result.value if isinstance(result.value, dict) else None
    return types.CallToolResult(content=content, structured_content=structured)


async def serve_stdio(registry: ToolRegistry) -> None:
    from mcp.server.stdio import stdio_server

    server = mcp_server(registry)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def streamable_http(registry: ToolRegistry, *, loopback_only: bool) -> tuple[StreamableHTTPASGIApp, StreamableHTTPSessionManager]:
    """The ASGI endpoint to mount at `/mcp`, and the session manager whose `run()` the app's
    lifespan must enter. `loopback_only` turns on DNS-rebinding protection (Host/Origin checks)
    for servers bound to loopback without API keys — the case rebinding attacks target."""
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=LOOPBACK_HOSTS,
        allowed_origins=[f"http://{host}" for host in LOOPBACK_HOSTS]) if loopback_only else None
    manager = StreamableHTTPSessionManager(app=mcp_server(registry), security_settings=security)
    return StreamableHTTPASGIApp(manager), manager
