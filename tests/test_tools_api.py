"""The main server offers a user's tools: `/v1/tools`, tool routes, files, and MCP at `/mcp`."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
from mcp import Client

from agentd.config import Settings
from agentd.server.app import create_app
from tests.conftest import RunningServer
from tools import ToolLoadError, ToolRegistry

USER_TOOLS = Path(__file__).parent / "fixtures" / "user_tools.py"
KEY = "server-key"


@pytest.fixture(scope="module")
def tool_servers(registry, tmp_path_factory):
    """The same user tools file served twice: open, and behind an API key."""
    root = tmp_path_factory.mktemp("served-tools")
    open_server = RunningServer(create_app(Settings(data_dir=root / "open", tools=[str(USER_TOOLS)]), registry))
    keyed = RunningServer(create_app(Settings(data_dir=root / "keyed", tools=[str(USER_TOOLS)], api_keys=[KEY]),
                                     registry))
    yield open_server, keyed
    open_server.stop()
    keyed.stop()


def test_user_tools_are_listed_beside_the_builtins(tool_servers):
    listed = httpx.get(f"{tool_servers[0].url}/v1/tools").json()["data"]
    names = {entry["name"] for entry in listed}
    assert {"shout", "stretch_image", "increment", "calculator", "python", "knowledge_search"} <= names
    shout = next(entry for entry in listed if entry["name"] == "shout")
    assert shout["parameters"]["properties"]["times"]["default"] == 1 and shout["source"] == "local"


def test_tools_are_called_over_http_and_artifacts_fetched_as_files(tool_servers):
    url = tool_servers[0].url
    assert httpx.post(f"{url}/v1/tools/shout", json={"text": "ok"}).json()["content"][0]["text"] == "OK"
    drawn = httpx.post(f"{url}/v1/tools/python", timeout=60, json={
        "code": "import matplotlib.pyplot as plt\nplt.plot([0, 1])"}).json()
    image = next(part for part in drawn["content"] if part["type"] == "image")
    content = httpx.get(f"{url}/v1/files/{image['file_id']}/content")
    assert content.status_code == 200 and content.content == base64.b64decode(image["data"])
    missing = httpx.get(f"{url}/v1/files/file-nothere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "file_not_found"


async def test_the_same_tools_over_mcp(tool_servers):
    async with Client(f"{tool_servers[0].url}/mcp") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"shout", "increment", "python"} <= names
        assert (await client.call_tool("shout", {"text": "via mcp"})).content[0].text == "VIA MCP"


def test_api_keys_guard_tools_files_and_mcp(tool_servers):
    url = tool_servers[1].url
    for method, path in [("GET", "/v1/tools"), ("POST", "/v1/tools/shout"), ("GET", "/v1/files/file-x"),
                         ("POST", "/mcp")]:
        response = httpx.request(method, f"{url}{path}", json={})
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "invalid_api_key"
    authorised = httpx.get(f"{url}/v1/tools", headers={"Authorization": f"Bearer {KEY}"})
    assert authorised.status_code == 200


def test_a_broken_tools_file_stops_the_server_with_its_reason(registry, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("from tools import tool\n\n@tool\ndef f(x) -> int:\n    '''Doc.'''\n")
    with pytest.raises(ToolLoadError, match="argument 'x' has no type hint"):
        create_app(Settings(data_dir=tmp_path, tools=[str(broken)]), registry)
    with pytest.raises(ToolLoadError, match="tools file not found"):
        create_app(Settings(data_dir=tmp_path, tools=[str(tmp_path / "missing.py")]), registry)
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(ToolLoadError, match="defines no @tool functions"):
        create_app(Settings(data_dir=tmp_path, tools=[str(empty)]), registry)


def test_installed_packages_offer_tools_through_entry_points(tmp_path, monkeypatch):
    package = tmp_path / "weather_tools_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from tools import tool\n\n@tool\ndef forecast(city: str) -> str:\n"
        "    '''Tomorrow's forecast.\n\n    Args:\n        city: where.\n    '''\n    return f'sun in {city}'\n")
    dist = tmp_path / "weather_tools_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: weather-tools-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[agentd.tools]\nweather = weather_tools_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = ToolRegistry()
    assert [tool.name for tool in registry.load_entry_points()] == ["forecast"]
    assert registry.get("forecast")("Oslo") == "sun in Oslo"


def test_bodies_that_are_not_utf8_or_off_the_schema_are_400(tool_servers):
    """Issue 18: undecodable bytes were a 500; `true` for a number was taken as 1."""
    url = tool_servers[0].url
    undecodable = httpx.post(f"{url}/v1/tools/calculator", content=b"\xff\xfe{",
                             headers={"content-type": "application/json"})
    assert undecodable.status_code == 400 and undecodable.json()["error"]["code"] == "invalid_tool_arguments"
    for sent in ({"json": {"text": "a", "times": True}}, {"data": {"text": "a", "times": "true"}}):
        off_schema = httpx.post(f"{url}/v1/tools/shout", **sent)
        assert off_schema.status_code == 400 and off_schema.json()["error"]["param"] == "times"
