"""Invocation: validation, exceptions and timeouts become observations; calls run in parallel;
images travel through the file store."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from PIL import Image as PILImage

from tools import FileStore, Image, ToolError, ToolRegistry, ToolResult, tool


@tool
def divide(a: float, b: float) -> float:
    """Divide a by b.

    Args:
        a: numerator.
        b: denominator.
    """
    return a / b


@tool
def refuse(reason: str) -> str:
    """Always refuses.

    Args:
        reason: why.
    """
    raise ToolError(f"refused: {reason}")


@tool(timeout=0.3)
async def sleepy(seconds: float) -> str:
    """Sleep, then answer.

    Args:
        seconds: how long.
    """
    await asyncio.sleep(seconds)
    return "awake"


@tool(timeout=0.3)
def sleepy_sync(seconds: float) -> str:
    """Sleep in a thread, then answer.

    Args:
        seconds: how long.
    """
    time.sleep(seconds)
    return "awake"


@tool
def make_square(size: int) -> Image:
    """Draw a red square.

    Args:
        size: side in pixels.
    """
    return Image.from_pil(PILImage.new("RGB", (size, size), "red"))


@tool
def measure(image: Image) -> dict:
    """Measure a picture.

    Args:
        image: the picture.
    """
    return {"width": image.width, "height": image.height, "mime_type": image.mime_type}


@pytest.fixture()
def registry(tmp_path) -> ToolRegistry:
    return ToolRegistry([divide, refuse, sleepy, sleepy_sync, make_square, measure],
                        file_store=FileStore(tmp_path / "files"))


async def test_a_good_call_returns_its_value(registry):
    result = await registry.invoke("divide", {"a": 1, "b": 4}, call_id="call_1")
    assert result.ok and result.value == 0.25 and result.call_id == "call_1"
    assert result.observation() == "0.25"


async def test_validation_errors_are_observations_naming_each_field(registry):
    result = await registry.invoke("divide", {"a": "one", "c": 2})
    assert not result.ok and result.error.kind == "invalid_arguments"
    text = result.observation()
    assert "a: Input should be a valid number" in text and "b: Field required" in text
    assert "c: unexpected argument" in text


async def test_arguments_may_come_as_a_json_string(registry):
    assert (await registry.invoke("divide", '{"a": 3, "b": 2}')).value == 1.5
    bad = await registry.invoke("divide", '{"a": 3,')
    assert bad.error.kind == "invalid_arguments" and "not valid JSON" in bad.error.message
    assert (await registry.invoke("divide", "[1, 2]")).error.kind == "invalid_arguments"


async def test_exceptions_and_tool_errors_are_observations(registry):
    crashed = await registry.invoke("divide", {"a": 1, "b": 0})
    assert crashed.error.kind == "exception" and "ZeroDivisionError" in crashed.observation()
    refused = await registry.invoke("refuse", {"reason": "no"})
    assert refused.error.kind == "tool_error" and refused.observation().endswith("refused: no")


async def test_timeouts_are_observations(registry):
    for name in ("sleepy", "sleepy_sync"):
        started = time.monotonic()
        result = await registry.invoke(name, {"seconds": 5})
        assert result.error.kind == "timeout" and "0.3 s limit" in result.observation()
        assert time.monotonic() - started < 3
    assert (await registry.invoke("sleepy", {"seconds": 0.01})).value == "awake"


async def test_unknown_tools_list_the_available_ones(registry):
    result = await registry.invoke("nope", {})
    assert result.error.kind == "unknown_tool" and "divide" in result.observation()


async def test_independent_calls_run_concurrently(tmp_path):
    # Each call waits at a barrier that only opens when all three are inside at once.
    async_barrier = asyncio.Barrier(3)
    thread_barrier = threading.Barrier(3, timeout=10)

    @tool
    async def meet_async(n: int) -> int:
        """Wait for the others.

        Args:
            n: an id.
        """
        async with asyncio.timeout(10):
            await async_barrier.wait()
        return n

    @tool
    def meet_sync(n: int) -> int:
        """Wait for the others in a thread.

        Args:
            n: an id.
        """
        thread_barrier.wait()
        return n

    registry = ToolRegistry([meet_async, meet_sync])
    for name in ("meet_async", "meet_sync"):
        results = await asyncio.gather(*(registry.invoke(name, {"n": n}, call_id=f"c{n}") for n in (1, 2, 3)))
        assert [r.value for r in results] == [1, 2, 3] and [r.call_id for r in results] == ["c1", "c2", "c3"]


async def test_images_go_to_the_file_store_and_come_back_by_id(registry, tmp_path):
    made = await registry.invoke("make_square", {"size": 8})
    (artifact,) = made.artifacts
    assert artifact.file_id.startswith("file-") and (artifact.width, artifact.height) == (8, 8)
    assert f"[image {artifact.file_id}: image/png 8x8" in made.observation()
    measured = await registry.invoke("measure", {"image": artifact.file_id})
    assert measured.value == {"width": 8, "height": 8, "mime_type": "image/png"}
    as_data_url = Image.from_pil(PILImage.new("RGB", (3, 5))).to_data_url()
    assert (await registry.invoke("measure", {"image": as_data_url})).value["height"] == 5


async def test_local_paths_only_when_the_context_allows(registry, tmp_path):
    path = tmp_path / "pic.jpg"
    PILImage.new("RGB", (4, 2)).save(path)
    refused = await registry.invoke("measure", {"image": str(path)})
    assert refused.error.kind == "invalid_arguments" and "local paths are not accepted" in refused.observation()
    trusting = ToolRegistry([measure], allow_local_paths=True)
    assert (await trusting.invoke("measure", {"image": str(path)})).value["mime_type"] == "image/jpeg"
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    assert "not an image" in (await trusting.invoke("measure", {"image": str(not_an_image)})).observation()
    assert "no file with id" in (await registry.invoke("measure", {"image": "file-missing"})).observation()


async def test_results_round_trip_through_json(registry):
    made = await registry.invoke("make_square", {"size": 4})
    body = made.to_dict(inline=True, context=registry.context)
    assert body["content"][0]["data"] and body["is_error"] is False
    again = ToolResult.from_dict(body)
    assert again.artifacts[0].data == registry.context.file_store.read(made.artifacts[0].file_id)
    failed = await registry.invoke("refuse", {"reason": "x"})
    assert ToolResult.from_dict(failed.to_dict()).error == failed.error


def test_duplicate_names_are_refused(registry):
    from tools import ToolLoadError

    with pytest.raises(ToolLoadError, match="two tools are named 'divide'"):
        registry.add(tool(name="divide")(refuse.fn))


async def test_an_openai_image_url_part_is_an_image(registry):
    url = Image.from_pil(PILImage.new("RGB", (6, 2))).to_data_url()
    part = {"type": "image_url", "image_url": {"url": url, "detail": "auto"}}
    assert (await registry.invoke("measure", {"image": part})).value["width"] == 6
