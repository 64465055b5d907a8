"""`agentd tools …`: list, call, and serve tools (HTTP and MCP) without the model server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

tools_app = typer.Typer(help="List, try and serve tools.", no_args_is_help=True)

ToolFiles = Annotated[Optional[list[Path]], typer.Option("--tools", help="Python file with @tool functions, repeatable.")]
RemoteTools = Annotated[Optional[list[str]], typer.Option("--remote-tools", help="Tool server URL to import, repeatable.")]
MCPServers = Annotated[Optional[list[str]], typer.Option("--mcp", help="MCP server URL or command to import, repeatable.")]
NoBuiltins = Annotated[bool, typer.Option("--no-builtins", help="Leave out calculator, python, knowledge_*.")]
DataDir = Annotated[Optional[Path], typer.Option(help="Where files and the knowledge base live.")]


def _registry(tools, remote_tools, mcp, no_builtins, data_dir, *, allow_local_paths: bool):
    from agentd.config import Settings
    from tools.loading import build_registry
    from tools.registry import ToolLoadError

    settings = Settings(**({"data_dir": data_dir} if data_dir else {}))
    try:
        return build_registry(settings.data_dir, tool_files=tools or (), remote_urls=remote_tools or (),
                              mcp_targets=mcp or (), builtins=not no_builtins, allow_local_paths=allow_local_paths)
    except ToolLoadError as error:
        raise typer.BadParameter(str(error)) from None


@tools_app.command("list")
def list_tools(tools: ToolFiles = None, remote_tools: RemoteTools = None, mcp: MCPServers = None,
               no_builtins: NoBuiltins = False, data_dir: DataDir = None,
               schema: Annotated[bool, typer.Option(help="Print each tool's JSON schema too.")] = False) -> None:
    """List the tools a server started with the same options would offer."""
    registry = _registry(tools, remote_tools, mcp, no_builtins, data_dir, allow_local_paths=False)
    try:
        for found in registry:
            flags = [flag for flag in ("requires_approval", "long_running") if getattr(found, flag)]
            typer.echo(f"{found.name:<22} {found.description.splitlines()[0]}"
                       + (f"  [{', '.join(flags)}]" if flags else "") + ("" if found.source == "local" else f"  ({found.source})"))
            if schema:
                typer.echo(json.dumps(found.parameters, indent=2))
    finally:
        registry.close()


@tools_app.command("call")
def call_tool(name: str,
              arg: Annotated[Optional[list[str]], typer.Option(help="Argument as key=value (value parsed as JSON if it can be), repeatable.")] = None,
              json_arguments: Annotated[Optional[str], typer.Option("--json", help="All arguments as one JSON object.")] = None,
              tools: ToolFiles = None, remote_tools: RemoteTools = None, mcp: MCPServers = None,
              no_builtins: NoBuiltins = False, data_dir: DataDir = None) -> None:
    """Call one tool by hand; images and files it returns are saved in the data dir's file store.

    Local paths are accepted for image and file arguments here (you are at your own machine).
    """
    arguments = _parse_arguments(arg or [], json_arguments)
    registry = _registry(tools, remote_tools, mcp, no_builtins, data_dir, allow_local_paths=True)
    try:
        result = asyncio.run(registry.invoke(name, arguments))
        typer.echo(result.observation(max_chars=100_000))
        store = registry.context.file_store
        for artifact in result.artifacts:
            if artifact.file_id and store is not None:
                typer.echo(f"{artifact.kind} saved: {store.path(artifact.file_id)}")
    finally:
        registry.close()  # closes the file store too: read the artifacts' paths before
    if not result.ok:
        raise typer.Exit(1)


def _parse_arguments(pairs: list[str], as_json: str | None) -> dict:
    arguments: dict = {}
    if as_json:
        try:
            arguments = json.loads(as_json)
        except json.JSONDecodeError as error:
            raise typer.BadParameter(f"--json is not valid JSON: {error}") from None
        if not isinstance(arguments, dict):
            raise typer.BadParameter("--json must be a JSON object")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--arg {pair!r}: write it as key=value")
        try:
            arguments[key] = json.loads(value)
        except json.JSONDecodeError:
            arguments[key] = value
    return arguments


@tools_app.command("serve")
def serve_tools(host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
                port: Annotated[int, typer.Option(help="Port to bind.")] = 8100,
                api_key: Annotated[Optional[list[str]], typer.Option(help="Accepted API key, repeatable.")] = None,
                tools: ToolFiles = None, remote_tools: RemoteTools = None, mcp: MCPServers = None,
                no_builtins: NoBuiltins = False, data_dir: DataDir = None) -> None:
    """Serve the tools over HTTP (`/tools`, OpenAPI at `/docs`) and MCP (streamable HTTP at `/mcp`)."""
    import uvicorn

    from agentd.server.tools import create_tool_app

    registry = _registry(tools, remote_tools, mcp, no_builtins, data_dir, allow_local_paths=False)
    try:
        application = create_tool_app(registry, api_keys=api_key or (),
                                      loopback_only=host in ("127.0.0.1", "localhost", "::1"))
        uvicorn.run(application, host=host, port=port, log_level="info")
    finally:
        registry.close()


@tools_app.command("mcp")
def serve_mcp_stdio(tools: ToolFiles = None, remote_tools: RemoteTools = None, mcp: MCPServers = None,
                    no_builtins: NoBuiltins = False, data_dir: DataDir = None) -> None:
    """Serve the tools as an MCP server over stdio (for Claude Desktop, IDEs, `mcp` clients)."""
    import anyio

    from tools.mcp_server import serve_stdio

    registry = _registry(tools, remote_tools, mcp, no_builtins, data_dir, allow_local_paths=False)
    try:
        anyio.run(serve_stdio, registry)
    finally:
        registry.close()
