"""`text_to_image` over a real (tiny, random) diffusers pipeline: through a tool registry and over HTTP."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image as PILImage

from agentd.config import Settings
from agentd.server.app import create_app
from pipelines.image_generation import ImageGenerator, check_request
from tests.conftest import RunningServer
from tests.fixtures.tiny_diffusion import make_tiny_diffusion
from tools import ToolRegistry
from tools.builtin.image_generation import ImageGenerationTools
from tools.files import FileStore

SMALL = {"width": 64, "height": 96, "steps": 3}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Torch's thread pool spins against other work on a shared 2-core machine: 0.1 s a picture becomes 2 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory) -> Path:
    return make_tiny_diffusion(tmp_path_factory.mktemp("diffusion") / "tiny-sd")


@pytest.fixture(scope="module")
def drawing(pipeline_folder, tmp_path_factory):
    """One registry (with a file store) over one toolkit, so the pipeline loads once for the module."""
    registry = ToolRegistry([ImageGenerationTools(pipeline_folder)],
                            file_store=FileStore(tmp_path_factory.mktemp("image-files")))
    yield registry
    registry.close()


async def draw(registry: ToolRegistry, **arguments):
    result = await registry.invoke("text_to_image", {"prompt": "a red cat on a blue mat", **arguments})
    assert result.ok, result.error
    [artifact] = result.artifacts
    settings = next(part.value for part in result.content if part.type == "json")
    return registry.context.file_store.read(artifact.file_id), artifact, settings


async def test_draws_a_png_of_the_requested_size_and_reports_how(drawing):
    png, artifact, settings = await draw(drawing, seed=5, **SMALL)
    with PILImage.open(io.BytesIO(png)) as picture:
        assert (picture.format, picture.size, picture.mode) == ("PNG", (64, 96), "RGB")
    assert (artifact.kind, artifact.mime_type, artifact.width, artifact.height) == ("image", "image/png", 64, 96)
    assert settings["seed"] == 5 and settings["steps"] == 3 and (settings["width"], settings["height"]) == (64, 96)
    assert settings["seconds"] > 0 and "ignored" not in settings


async def test_the_same_seed_draws_the_same_picture_and_another_seed_another(drawing):
    first, _, _ = await draw(drawing, seed=11, **SMALL)
    again, _, _ = await draw(drawing, seed=11, **SMALL)
    other, _, _ = await draw(drawing, seed=12, **SMALL)
    assert first == again and first != other
    negative, _, _ = await draw(drawing, seed=11, negative_prompt="a dog", **SMALL)
    assert negative != first


async def test_without_a_seed_one_is_picked_and_reported_so_the_picture_can_be_drawn_again(drawing):
    png, _, settings = await draw(drawing, **SMALL)
    assert isinstance(settings["seed"], int) and 0 <= settings["seed"] < 2**31
    assert (await draw(drawing, seed=settings["seed"], **SMALL))[0] == png


async def test_progress_reports_the_load_then_every_denoising_step(pipeline_folder, tmp_path):
    registry = ToolRegistry([ImageGenerationTools(pipeline_folder)], file_store=FileStore(tmp_path / "files"))
    updates: list[dict] = []
    context = replace(registry.context, on_progress=updates.append)
    tool = registry.get("text_to_image")
    assert tool.long_running and tool.timeout >= 600
    result = await registry.invoke("text_to_image", {"prompt": "a house", "seed": 1, **SMALL}, context=context)
    assert result.ok, result.error
    assert updates[0] == {"stage": "loading", "pipeline": str(pipeline_folder)}
    assert updates[1:] == [{"stage": "denoising", "step": step, "total_steps": 3} for step in (1, 2, 3)]
    registry.close()


async def test_a_call_that_times_out_frees_the_pipeline_for_the_next(drawing):
    await draw(drawing, seed=1, **SMALL)  # loaded, so the timeout falls inside the denoising loop
    slow = await drawing.invoke("text_to_image", {"prompt": "slow", "width": 64, "height": 64, "steps": 150},
                                timeout=0.3)
    assert not slow.ok and slow.error.kind == "timeout"
    # Were the drawing still running, this call would wait for its remaining ~140 steps behind the lock.
    result = await drawing.invoke("text_to_image", {"prompt": "next", "seed": 2, **SMALL}, timeout=10)
    assert result.ok, result.error


@pytest.mark.parametrize("arguments, says", [
    ({"width": 100}, "width: Input should be a multiple of 8"),
    ({"height": 4096}, "height: Input should be less than or equal to 2048"),
    ({"width": 32}, "width: Input should be greater than or equal to 64"),
    ({"steps": 0}, "steps: Input should be greater than or equal to 1"),
    ({"steps": 151}, "steps: Input should be less than or equal to 150"),
    ({"prompt": ""}, "prompt: String should have at least 1 character"),
])
async def test_sizes_and_steps_out_of_range_are_refused_with_the_rule(drawing, arguments, says):
    result = await drawing.invoke("text_to_image", {"prompt": "a cat", **arguments})
    assert result.error.kind == "invalid_arguments" and says in result.error.message


def test_the_library_checks_the_request_itself(pipeline_folder):
    with pytest.raises(ValueError, match=r"width must be a multiple of 8 between 64 and 2048 \(got 65\)"):
        check_request(65, 64, 10)
    with pytest.raises(ValueError, match=r"steps must be between 1 and 150 \(got 0\)"):
        check_request(64, 64, 0)
    with pytest.raises(ValueError, match="height must be"):
        ImageGenerator(pipeline_folder).generate("x", width=64, height=2056)


async def test_unconfigured_the_tool_says_exactly_how_to_configure_it():
    registry = ToolRegistry([ImageGenerationTools(None)])
    result = await registry.invoke("text_to_image", {"prompt": "a cat"})
    assert result.error.kind == "tool_error"
    for needed in ("AGENTD_IMAGE_PIPELINE=", "agentd serve --image-pipeline", "save_pretrained"):
        assert needed in result.error.message


async def test_a_folder_that_is_not_a_pipeline_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    expected = {tmp_path / "missing": "is not a folder", empty: "has no model_index.json",
                broken: "could not load the diffusers pipeline"}
    for folder, says in expected.items():
        result = await ToolRegistry([ImageGenerationTools(folder)]).invoke("text_to_image", {"prompt": "a cat"})
        assert result.error.kind == "tool_error", result
        assert says in result.error.message and str(folder) in result.error.message
        assert "--image-pipeline" in result.error.message


def test_text_to_image_through_a_real_server(registry, pipeline_folder, tmp_path):
    server = RunningServer(create_app(Settings(data_dir=tmp_path, image_pipeline=pipeline_folder), registry))
    try:
        listed = {entry["name"]: entry for entry in httpx.get(f"{server.url}/v1/tools").json()["data"]}
        assert listed["text_to_image"]["long_running"]
        called = httpx.post(f"{server.url}/v1/tools/text_to_image", timeout=60,
                            json={"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "seed": 3})
        assert called.status_code == 200, called.text
        body = called.json()
        assert not body["is_error"], body["error"]
        image = next(part for part in body["content"] if part["type"] == "image")
        settings = next(part["json"] for part in body["content"] if part["type"] == "json")
        assert settings["seed"] == 3 and (image["width"], image["height"]) == (64, 64)
        stored = httpx.get(f"{server.url}/v1/files/{image['file_id']}/content")
        with PILImage.open(io.BytesIO(stored.content)) as picture:
            assert (picture.format, picture.size) == ("PNG", (64, 64))
        refused = httpx.post(f"{server.url}/v1/tools/text_to_image", json={"prompt": "x", "width": 70})
        assert refused.status_code == 400 and "multiple of 8" in refused.json()["error"]["message"]
    finally:
        server.stop()


def test_serve_offers_the_image_pipeline_option():
    from typer.testing import CliRunner

    from agentd.cli import app

    shown = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert shown.exit_code == 0 and "--image-pipeline" in shown.output


def test_the_arguments_schema_compiles_for_constrained_tool_calls():
    """Agents force tool calls through xgrammar; it refuses bounds past 64 bits, so a seed limit of 2**63 broke it."""
    import xgrammar

    schema = ImageGenerationTools(None).tools()[0].parameters
    assert schema["properties"]["width"]["multipleOf"] == 8
    xgrammar.Grammar.from_json_schema(json.dumps(schema))
