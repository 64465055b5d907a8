"""MCP both ways, with real peers: agentd's tools through the official `mcp` client (stdio and
streamable HTTP), and an external MCP server built with the SDK imported into a registry."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import httpx
import pytest
from mcp import Client, StdioServerParameters
from PIL import Image as PILImage

from agentd.server.background import BackgroundServer
from agentd.server.tools import create_tool_app
from tools import FileStore, Image, ToolLoadError, ToolRegistry
from tools.builtin.calculator import calculator
from tools.mcp_client import MCPToolkit

FIXTURES = Path(__file__).parent / "fixtures"
USER_TOOLS = FIXTURES / "user_tools.py"
WEATHER = f"{sys.executable} {FIXTURES / 'mcp_weather_server.py'}"


def red_png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), "red").save(buffer, "PNG")
    return Image(buffer.getvalue(), "image/png").to_data_url()


async def exercise(client: Client) -> None:
    listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert {"calculator", "shout", "stretch_image", "increment"} <= set(listed)
    assert listed["shout"].input_schema["required"] == ["text"]
    assert listed["calculator"].meta["agentd/timeout"] == 5

    shouted = await client.call_tool("shout", {"text": "mcp", "times": 2})
    assert not shouted.is_error and shouted.content[0].text == "MCP MCP"
    resized = await client.call_tool("stretch_image", {"image": red_png(20, 20), "width": 5, "height": 7})
    image = resized.content[0]
    assert image.type == "image" and image.mime_type == "image/png"
    assert PILImage.open(io.BytesIO(base64.b64decode(image.data))).size == (5, 7)
    failed = await client.call_tool("calculator", {"expression": "1/0"})
    assert failed.is_error and "division by zero" in failed.content[0].text
    invalid = await client.call_tool("shout", {"times": 2})
    assert invalid.is_error and "text: Field required" in invalid.content[0].text
    unknown = await client.call_tool("nope", {})
    assert unknown.is_error and "no tool named 'nope'" in unknown.content[0].text


async def test_our_tools_over_streamable_http(tmp_path):
    registry = ToolRegistry([calculator], file_store=FileStore(tmp_path / "files"))
    registry.load_file(USER_TOOLS)
    running = BackgroundServer(create_tool_app(registry))
    try:
        async with Client(f"{running.url}/mcp") as client:
            await exercise(client)
        # DNS-rebinding protection on a loopback server without keys: a foreign Host is refused.
        response = httpx.post(f"{running.url}/mcp", json={}, headers={"Host": "evil.example:80"})
        assert response.status_code == 421
    finally:
        running.stop()


async def test_our_tools_over_stdio(tmp_path):
    command = StdioServerParameters(command=sys.executable, args=[
        "-m", "agentd.cli", "tools", "mcp", "--tools", str(USER_TOOLS), "--data-dir", str(tmp_path)])
    async with Client(command) as client:
        await exercise(client)
        listed = {tool.name for tool in (await client.list_tools()).tools}
        assert {"python", "knowledge_search"} <= listed


async def test_importing_an_external_stdio_server(tmp_path):
    toolkit = MCPToolkit(WEATHER, prefix="weather_")
    try:
        registry = ToolRegistry([toolkit], file_store=FileStore(tmp_path / "files"))
        assert set(registry.names) == {"weather_temperature", "weather_weather_map"}
        assert registry.get("weather_temperature").source == f"mcp:{WEATHER}"
        assert (await registry.invoke("weather_temperature", {"city": "Oslo"})).value == "-3.0 °C in Oslo"
        mapped = await registry.invoke("weather_weather_map", {"width": 8})
        (artifact,) = mapped.artifacts
        assert (artifact.width, artifact.height) == (8, 4) and artifact.file_id
        failed = await registry.invoke("weather_temperature", {"city": "Atlantis"})
        assert failed.error.kind == "remote_error" and "unknown city" in failed.observation()
        invalid = await registry.invoke("weather_temperature", {})
        assert invalid.error.kind == "invalid_arguments" and "'city' is a required property" in invalid.observation()
    finally:
        toolkit.close()


async def test_importing_an_external_http_server(tmp_path):
    from tests.fixtures.mcp_weather_server import server

    running = BackgroundServer(server.streamable_http_app())
    toolkit = MCPToolkit(f"{running.url}/mcp")
    try:
        result = await ToolRegistry([toolkit]).invoke("temperature", {"city": "Paris"})
        assert result.value == "14.5 °C in Paris"
    finally:
        toolkit.close()
        running.stop()


def test_a_server_that_cannot_start_is_a_clear_load_error():
    with pytest.raises(ToolLoadError, match="cannot connect to the MCP server"):
        MCPToolkit(f"{sys.executable} -c 'import sys; sys.exit(3)'", connect_timeout=20)


def test_close_ends_the_thread_and_closes_its_loop():
    toolkit = MCPToolkit(WEATHER)
    toolkit.close()
    toolkit.close()  # a second close (shutdown after a failed start, say) is harmless
    assert not toolkit._thread.is_alive() and toolkit._loop.is_closed()
