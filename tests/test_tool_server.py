"""The HTTP tool server and `RemoteToolkit`: tools round trip over a real loopback server."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image as PILImage

from agentd.server.background import BackgroundServer
from agentd.server.tools import create_tool_app
from tools import FileStore, Image, ToolLoadError, ToolRegistry
from tools.builtin.calculator import calculator
from tools.remote import RemoteToolkit

USER_TOOLS = Path(__file__).parent / "fixtures" / "user_tools.py"
KEY = "tool-secret"


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), "blue").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tool_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("tool-server")
    registry = ToolRegistry([calculator], file_store=FileStore(root / "files"))
    registry.load_file(USER_TOOLS)
    running = BackgroundServer(create_tool_app(registry, api_keys=[KEY]))
    yield running
    running.stop()


@pytest.fixture()
def http(tool_server):
    with httpx.Client(base_url=tool_server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        yield client


def test_listing_and_one_openapi_route_per_tool(http):
    listed = http.get("/tools").json()
    assert {t["name"] for t in listed["data"]} == {"calculator", "shout", "stretch_image", "increment"}
    paths = http.get("/openapi.json").json()["paths"]
    body = paths["/tools/shout"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["required"] == ["text"]
    multipart = paths["/tools/stretch_image"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert multipart["properties"]["image"]["format"] == "binary"
    # The key guard, input errors, and no FastAPI 422 (never sent).
    assert set(paths["/tools/shout"]["post"]["responses"]) == {"200", "400", "401", "404"}
    assert "401" in paths["/files/{file_id}"]["get"]["responses"]


def test_json_calls_and_errors_in_openai_shape(http):
    done = http.post("/tools/shout", json={"text": "hi", "times": 2}).json()
    assert done["is_error"] is False and done["content"] == [{"type": "text", "text": "HI HI"}]
    bad = http.post("/tools/shout", json={"times": "many"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_tool_arguments"
    assert "text: 'text' is a required property" in bad.json()["error"]["message"]
    assert bad.json()["error"]["param"] in ("text", "times")
    assert http.post("/tools/shout", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    missing = http.post("/tools/nope", json={})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "tool_not_found"
    failed = http.post("/tools/calculator", json={"expression": "1/0"}).json()
    assert failed["is_error"] is True and failed["error"] == {"type": "tool_error", "message": "division by zero"}


def test_the_key_is_required(tool_server):
    response = httpx.get(f"{tool_server.url}/tools")
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"


def test_images_as_multipart_in_and_base64_and_file_ids_out(http):
    response = http.post("/tools/stretch_image", files={"image": ("in.png", png(40, 30), "image/png")},
                         data={"width": "8", "height": "6"})
    (part,) = response.json()["content"]
    assert part["type"] == "image" and (part["width"], part["height"]) == (8, 6)
    assert PILImage.open(io.BytesIO(base64.b64decode(part["data"]))).size == (8, 6)
    content = http.get(f"/files/{part['file_id']}/content")
    assert content.headers["content-type"] == "image/png" and content.content == base64.b64decode(part["data"])
    assert http.get(f"/files/{part['file_id']}").json()["bytes"] == len(content.content)
    lean = http.post("/tools/stretch_image?inline=false", json={
        "image": Image(png(4, 4), "image/png").to_data_url(), "width": 2, "height": 2}).json()
    assert "data" not in lean["content"][0] and lean["content"][0]["file_id"]
    not_image = http.post("/tools/stretch_image", files={"image": ("x.png", b"nope", "image/png")},
                          data={"width": "1", "height": "1"})
    assert not_image.status_code == 400 and "not an image" in not_image.json()["error"]["message"]


def test_local_paths_are_refused_over_http(http, tmp_path):
    path = tmp_path / "secret.png"
    path.write_bytes(png(2, 2))
    refused = http.post("/tools/stretch_image", json={"image": str(path), "width": 1, "height": 1})
    assert refused.status_code == 400 and "local paths are not accepted" in refused.json()["error"]["message"]


async def test_remote_tools_work_like_local_ones(tool_server, tmp_path):
    local = ToolRegistry(file_store=FileStore(tmp_path / "files"))
    local.add(RemoteToolkit.from_url(f"{tool_server.url}/tools", api_key=KEY, prefix="remote_"))
    assert set(local.names) == {"remote_calculator", "remote_shout", "remote_stretch_image", "remote_increment"}
    assert local.get("remote_shout").source == f"{tool_server.url}/tools"
    assert (await local.invoke("remote_shout", {"text": "far"})).value == "FAR"
    # The state lives on the remote side.
    first = (await local.invoke("remote_increment", {"by": 5})).value
    assert (await local.invoke("remote_increment", {})).value == first + 1

    # A picture from this side's store goes over as bytes; the answer lands in this side's store.
    stored = local.context.file_store.put(png(10, 10), "mine.png", "vision", "image/png")
    resized = await local.invoke("remote_stretch_image", {"image": stored.id, "width": 3, "height": 4})
    (artifact,) = resized.artifacts
    assert local.context.file_store.get(artifact.file_id).bytes == artifact.size
    assert PILImage.open(local.context.file_store.path(artifact.file_id)).size == (3, 4)

    invalid = await local.invoke("remote_shout", {"text": 3})
    assert invalid.error.kind == "invalid_arguments" and "is not of type 'string'" in invalid.observation()
    failed = await local.invoke("remote_calculator", {"expression": "1/0"})
    assert failed.error.kind == "tool_error" and "division by zero" in failed.observation()


def test_unreachable_or_unauthorised_servers_fail_to_load(tool_server):
    with pytest.raises(ToolLoadError, match="401"):
        RemoteToolkit.from_url(f"{tool_server.url}/tools")
    with pytest.raises(ToolLoadError, match="cannot read the tool listing"):
        RemoteToolkit.from_url("http://127.0.0.1:9/tools", timeout=2)


async def test_a_server_that_goes_away_gives_an_observation(tool_server, tmp_path):
    app = create_tool_app(ToolRegistry([calculator]))
    short_lived = BackgroundServer(app)
    toolkit = RemoteToolkit.from_url(f"{short_lived.url}/tools")
    short_lived.stop()
    result = await ToolRegistry([toolkit]).invoke("calculator", {"expression": "1+1"})
    assert result.error.kind == "remote_error" and "unreachable" in result.observation()
