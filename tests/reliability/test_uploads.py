"""Bad uploads get clear 4xx errors in the OpenAI shape, and nothing is kept of them: over the
size limit, the wrong type, malformed JSONL, a zip bomb, a picture that decodes to gigabytes, and
an "image" that is not one, through the Files API, the tool routes and chat."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import httpx
import pytest
from PIL import Image

from tests.conftest import start_server


@pytest.fixture(scope="module")
def small_limit(registry):
    running = start_server(registry, max_upload_mb=1)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http_small(small_limit):
    with httpx.Client(base_url=small_limit.url, timeout=60) as client:
        yield client


def zip_bomb() -> bytes:
    """100 MB of zeros in a zip of about 100 KB."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("tickets.jsonl", b"\0" * 100 * 2**20)
    return buffer.getvalue()


def pixel_flood() -> bytes:
    """A PNG of a few hundred KB that decodes to 20000 x 20000 pixels (400 M; 1.2 GB as RGB)."""
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    return buffer.getvalue()


def png(size=(32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, "PNG")
    return buffer.getvalue()


def refused(reply: httpx.Response, status: int = 400) -> str:
    assert reply.status_code == status, (reply.status_code, reply.text[:300])
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error["message"]


def files_listed(http) -> int:
    return len(http.get("/v1/files?limit=100").json()["data"])


def test_uploads_to_the_files_api(http_small):
    before = files_listed(http_small)
    upload = lambda data, name, purpose="fine-tune": http_small.post(  # noqa: E731
        "/v1/files", files={"file": (name, data)}, data={"purpose": purpose})
    assert "limit" in refused(upload(b"x" * (2 * 2**20), "big.jsonl"), 413)
    assert "line 2" in refused(upload(b'{"messages": [{"role": "user", "content": "hi"}]}\n{oops\n', "bad.jsonl"))
    refused(upload(png(), "tickets.jsonl"))  # a picture is not fine-tuning data
    refused(upload(zip_bomb(), "tickets.zip"))  # not JSONL either; and nothing unpacks it
    refused(upload(b"hello", "a.txt", purpose="nonsense"))
    assert files_listed(http_small) == before  # nothing refused was kept


def test_pictures_for_a_tool(http_small):
    call = lambda data, name: http_small.post(  # noqa: E731
        "/v1/tools/detect_edges", files={"image": (name, data, "image/png")})
    assert "megapixels" in refused(call(pixel_flood(), "flood.png"))
    assert "not an image" in refused(call(b"GIF89a but not really", "fake.png"))
    assert "not an image" in refused(call(zip_bomb(), "bomb.png"))
    assert call(png(), "fine.png").status_code == 200  # and a real one still works


def test_pictures_in_chat(http_small):
    def send(data: bytes):
        url = "data:image/png;base64," + base64.b64encode(data).decode()
        return http_small.post("/v1/chat/completions", json={"model": "agentd-react", "messages": [{
            "role": "user", "content": [{"type": "text", "text": "Find the edges."},
                                        {"type": "image_url", "image_url": {"url": url}}]}]})

    assert "megapixels" in refused(send(pixel_flood()))
    assert "not an image" in refused(send(b"\x89PNG\r\n\x1a\n" + b"\0" * 64))


def test_a_malformed_body_and_a_body_of_the_wrong_type(http_small):
    refused(http_small.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}))
    refused(http_small.post("/v1/chat/completions", content=json.dumps([1, 2]),
                            headers={"content-type": "application/json"}))
    refused(http_small.post("/v1/tools/calculator", content=b"\xff\xfe", headers={"content-type": "application/json"}))
