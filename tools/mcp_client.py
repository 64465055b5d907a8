"""`MCPToolkit`: the tools of an external MCP server (a URL, or a command speaking stdio).

The SDK's client session is an async context that must stay open between calls, while tools
are invoked from whatever event loop the caller runs. So one background thread owns the
connection and its loop (an `asyncio.Runner`, which closes the loop when the thread ends);
calls are submitted to it and awaited from the caller's loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shlex
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from tools.base import Tool, ToolError
from tools.context import ToolContext
from tools.decorator import Toolkit
from tools.media import File, Image
from tools.registry import ToolLoadError
from tools.validation import check_against_schema

META_PREFIX = "agentd/"


class MCPTool(Tool):
    def __init__(self, spec: Any, toolkit: MCPToolkit):
        meta = spec.meta or {}
        self.name = toolkit.prefix + spec.name
        self.remote_name = spec.name
        self.description = spec.description or ""
        self.parameters = spec.input_schema
        self.output_schema = spec.output_schema
        self.timeout = meta.get(f"{META_PREFIX}timeout")
        self.requires_approval = bool(meta.get(f"{META_PREFIX}requires_approval"))
        self.long_running = bool(meta.get(f"{META_PREFIX}long_running"))
        self.source = f"mcp:{toolkit.target}"
        self._toolkit = toolkit

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        return check_against_schema(self.parameters, arguments)

    async def _run(self, validated: dict[str, Any], context: ToolContext) -> list[Any]:
        result = await self._toolkit.call(self.remote_name, validated)
        values: list[Any] = []
        for block in result.content:
            if block.type == "text":
                values.append(block.text)
            elif block.type == "image":
                values.append(Image(base64.b64decode(block.data), block.mime_type))
            elif block.type == "resource" and hasattr(block.resource, "blob"):
                values.append(File(base64.b64decode(block.resource.blob), block.resource.mime_type or
                                   "application/octet-stream", block.resource.uri.rsplit("/", 1)[-1]))
            elif block.type == "resource":
                values.append(block.resource.text)
            else:
                values.append(f"[{block.type} content]")
        if result.is_error:
            raise ToolError("\n".join(v for v in values if isinstance(v, str)) or "the MCP tool reported an error",
                            kind="remote_error")
        structured = result.structured_content
        if structured is not None and len(values) <= 1:
            # SDK servers wrap a plain return value as {"result": value}.
            return structured["result"] if isinstance(structured, dict) and list(structured) == ["result"] else structured
        if len(values) == 1:
            return values[0]
        return values


class MCPToolkit(Toolkit):
    """Connects on construction; `close()` ends the session (and a stdio server's process)."""

    def __init__(self, target: str, *, prefix: str = "", connect_timeout: float = 30):
        from mcp import Client, StdioServerParameters

        self.target = target
        self.prefix = prefix
        if target.startswith(("http://", "https://")):
            server: Any = target
        else:
            command = shlex.split(target)
            if not command:
                raise ToolLoadError("an MCP server needs a URL or a command")
            server = StdioServerParameters(command=command[0], args=command[1:])
        # A loop_factory keeps the Runner from making this loop the calling thread's current one.
        self._runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        self._loop = self._runner.get_loop()
        self._ready: Future = Future()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, args=(Client, server), name=f"mcp {target}", daemon=True)
        self._thread.start()
        try:
            specs = self._ready.result(timeout=connect_timeout)
        except Exception as error:
            self.close()
            raise ToolLoadError(f"cannot connect to the MCP server {target}: {_reason(error)}") from None
        self._tools = [MCPTool(spec, self) for spec in specs]

    def _serve(self, client_class, server) -> None:
        with self._runner:
            self._runner.run(self._hold(client_class, server))

    async def _hold(self, client_class, server) -> None:
        self._stop = asyncio.Event()
        try:
            async with client_class(server) as client:
                self._client = client
                self._ready.set_result((await client.list_tools()).tools)
                await self._stop.wait()
        except BaseException as error:  # connection failures land in the constructor, not in a log
            if not self._ready.done():
                self._ready.set_exception(error)

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        if not self._thread.is_alive():
            raise ToolError(f"the MCP server {self.target} has disconnected", kind="remote_error")
        future = asyncio.run_coroutine_threadsafe(self._client.call_tool(name, arguments), self._loop)
        try:
            return await asyncio.wrap_future(future)
        except Exception as error:
            raise ToolError(f"the MCP server {self.target} failed: {_reason(error)}", kind="remote_error") from None

    def tools(self) -> list[Tool]:
        return list(self._tools)

    def close(self) -> None:
        """End the session and wait for the thread, which closes its loop; safe to call twice."""
        if self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed on its own (the server went away)
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


def _reason(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_reason(inner) for inner in error.exceptions)
    return f"{type(error).__name__}: {error}"
