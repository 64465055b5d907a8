"""Vision tools on pictures drawn here with known geometry, and on a real photograph (scikit-image's
astronaut, shipped in its wheel): through a ToolRegistry with a file store, and over HTTP."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from pipelines import vision
from agentd.config import Settings
from agentd.server.app import create_app
from tests.conftest import RunningServer
from tools import FileStore, Image, ToolRegistry
from tools.builtin.vision import VISION_TOOLS

# A 200x100 white picture with a black 60x40 rectangle whose top-left corner is (50, 30).
RECT = (50, 30, 60, 40)


def rectangle_picture(mode: str = "RGB") -> PILImage.Image:
    picture = PILImage.new(mode, (200, 100), "white")
    x, y, w, h = RECT
    picture.paste("black", (x, y, x + w, y + h))
    return picture


def data_url(picture: PILImage.Image, format: str = "PNG") -> str:
    return Image.from_pil(picture, format).to_data_url()


@pytest.fixture()
def tools(tmp_path) -> ToolRegistry:
    return ToolRegistry(VISION_TOOLS, file_store=FileStore(tmp_path / "files"))


def stored(tools: ToolRegistry, result) -> PILImage.Image:
    (artifact,) = result.artifacts
    assert artifact.file_id.startswith("file-"), result.observation()
    return PILImage.open(io.BytesIO(tools.context.file_store.read(artifact.file_id)))


def json_part(result) -> dict:
    return next(part.value for part in result.content if part.type == "json")


async def test_edges_lie_on_the_rectangle_border(tools):
    result = await tools.invoke("detect_edges", {"image": data_url(rectangle_picture())})
    assert result.ok, result.observation()
    edges = np.asarray(stored(tools, result))
    ys, xs = np.nonzero(edges)
    x, y, w, h = RECT
    on_border = (np.minimum(np.abs(xs - x), np.abs(xs - (x + w - 1))) <= 1) & (ys >= y - 1) & (ys <= y + h) | \
                (np.minimum(np.abs(ys - y), np.abs(ys - (y + h - 1))) <= 1) & (xs >= x - 1) & (xs <= x + w)
    assert len(xs) >= 2 * (w + h) - 4 and on_border.all()  # the whole outline, nothing else
    assert json_part(result)["edge_fraction"] == pytest.approx(len(xs) / edges.size)
    flat = await tools.invoke("detect_edges", {"image": data_url(PILImage.new("RGB", (20, 20), "gray"))})
    assert json_part(flat)["edge_fraction"] == 0.0


async def test_resize_crop_and_rotate_give_the_expected_sizes(tools):
    picture = data_url(rectangle_picture())
    cases = [
        ("resize_image", {"width": 512}, (512, 256)),
        ("resize_image", {"height": 50}, (100, 50)),
        ("resize_image", {"width": 100, "height": 100}, (100, 50)),
        ("resize_image", {"width": 30, "height": 70, "keep_aspect": False}, (30, 70)),
        ("crop_image", {"x": 50, "y": 30, "width": 60, "height": 40}, (60, 40)),
        ("rotate_image", {"degrees": 90}, (100, 200)),
        ("rotate_image", {"degrees": 45, "expand": False}, (200, 100)),
        ("rotate_image", {"degrees": 45}, (212, 212)),
    ]
    for name, arguments, size in cases:
        result = await tools.invoke(name, {"image": picture, **arguments})
        assert result.ok and stored(tools, result).size == size, (name, arguments, result.observation())
    cropped = stored(tools, await tools.invoke("crop_image", {"image": picture, "x": 50, "y": 30, "width": 60,
                                                               "height": 40}))
    assert cropped.convert("L").getextrema() == (0, 0)  # exactly the black rectangle
    turned = np.asarray(stored(tools, await tools.invoke("rotate_image", {"image": picture, "degrees": 90})))
    # Counter-clockwise: the rectangle's top-right corner (109, 30) moves to (30, 200 - 1 - 109).
    assert turned[200 - 1 - 109, 30].tolist() == [0, 0, 0] and turned[200 - 1 - 110, 30].tolist() == [255, 255, 255]


async def test_stats_of_a_two_colour_picture(tools):
    picture = PILImage.new("RGB", (10, 10), (255, 0, 0))
    picture.paste((0, 0, 255), (0, 0, 10, 5))  # top half blue, bottom half red
    result = await tools.invoke("image_stats", {"image": data_url(picture)})
    stats = result.value
    assert (stats["width"], stats["height"], stats["mode"]) == (10, 10, "RGB")
    red, green, blue = (stats["channels"][c] for c in "RGB")
    assert red["mean"] == blue["mean"] == 127.5 and red["std"] == 127.5 and (red["min"], red["max"]) == (0, 255)
    assert green == {"mean": 0.0, "std": 0.0, "min": 0, "max": 0, "histogram": [100] + [0] * 15}
    assert red["histogram"] == [50] + [0] * 14 + [50]
    gray = (await tools.invoke("image_stats", {"image": data_url(rectangle_picture("L"))})).value
    assert list(gray["channels"]) == ["L"] and gray["channels"]["L"]["histogram"][0] == 60 * 40


async def test_draw_boxes_outlines_exactly_the_box(tools):
    blank = data_url(PILImage.new("RGB", (40, 30), "white"))
    box = {"x": 5, "y": 4, "width": 20, "height": 10}
    result = await tools.invoke("draw_boxes", {"image": blank, "boxes": [box], "color": "#00ff00", "thickness": 1})
    drawn = np.asarray(stored(tools, result).convert("RGB"))
    green = (drawn == [0, 255, 0]).all(axis=2)
    assert green[4, 5:25].all() and green[13, 5:25].all() and green[4:14, 5].all() and green[4:14, 24].all()
    assert green.sum() == 2 * 20 + 2 * 8 and not green[5:13, 6:24].any()
    labelled = await tools.invoke("draw_boxes", {"image": blank, "boxes": [box, box], "labels": ["a"]})
    assert labelled.error.kind == "tool_error" and "one label per box" in labelled.observation()
    bad_colour = await tools.invoke("draw_boxes", {"image": blank, "boxes": [box], "color": "blurple"})
    assert "unknown colour 'blurple'" in bad_colour.observation()
    outside = await tools.invoke("draw_boxes", {"image": blank, "boxes": [{"x": 50, "y": 0, "width": 5, "height": 5}]})
    assert "lies outside the 40x30 image" in outside.observation()


async def test_convert_to_jpeg_gray_and_back(tools):
    transparent = PILImage.new("RGBA", (16, 8), (0, 0, 0, 0))
    result = await tools.invoke("convert_image", {"image": data_url(transparent), "format": "jpeg", "quality": 80})
    (artifact,) = result.artifacts
    jpeg = stored(tools, result)
    assert artifact.mime_type == "image/jpeg" and artifact.filename.endswith(".jpg") and jpeg.format == "JPEG"
    assert np.asarray(jpeg).min() >= 250  # transparency laid over white, not black
    gray = stored(tools, await tools.invoke("convert_image", {"image": artifact.file_id, "grayscale": True}))
    assert gray.mode == "L" and gray.format == "PNG" and gray.size == (16, 8)
    for format, pil_format in (("webp", "WEBP"), ("bmp", "BMP")):
        made = await tools.invoke("convert_image", {"image": artifact.file_id, "format": format})
        assert stored(tools, made).format == pil_format
    refused = await tools.invoke("convert_image", {"image": artifact.file_id, "format": "tiff"})
    assert refused.error.kind == "invalid_arguments" and "format" in refused.observation()


async def test_bad_parameters_are_readable_errors(tools):
    picture = data_url(rectangle_picture())
    crop = await tools.invoke("crop_image", {"image": picture, "x": 190, "y": 0, "width": 20, "height": 10})
    assert crop.error.kind == "tool_error" and "reaches outside the 200x100 image" in crop.observation()
    no_size = await tools.invoke("resize_image", {"image": picture})
    # Declared (needs_one_of), so checked with the other arguments, before the picture is read.
    assert no_size.error.kind == "invalid_arguments" and "give width or height" in no_size.observation()
    huge = await tools.invoke("resize_image", {"image": picture, "width": 100_000})
    assert "limit is 40 megapixels" in huge.observation()
    zero = await tools.invoke("crop_image", {"image": picture, "x": 0, "y": 0, "width": 0, "height": 5})
    assert zero.error.kind == "invalid_arguments" and "width" in zero.observation()
    edges = await tools.invoke("detect_edges", {"image": picture, "low": 300, "high": 100})
    assert "low <= high" in edges.observation()
    faces = await tools.invoke("detect_faces", {"image": picture, "scale_factor": 1.0})
    assert faces.error.kind == "invalid_arguments" and "scale_factor" in faces.observation()
    not_image = await tools.invoke("image_stats", {"image": "data:image/png;base64,aGVsbG8="})
    assert "not an image" in not_image.observation()


def test_pictures_over_the_pixel_limit_are_refused_before_decoding(tools):
    with pytest.raises(ValueError, match=r"8000x6000 \(48.0 megapixels\); the limit is 40"):
        vision.check_size(8000, 6000)


async def test_huge_input_is_refused(tools):
    # A 7000x6000 1-bit PNG is tiny on disk but 42 megapixels once decoded: refused from its header.
    with pytest.raises(ValueError, match=r"7000x6000 \(42.0 megapixels\); the limit is 40 megapixels"):
        Image.from_pil(PILImage.new("1", (7000, 6000)))
    encoded = io.BytesIO()
    PILImage.new("1", (7000, 6000)).save(encoded, "PNG")
    sent = "data:image/png;base64," + base64.b64encode(encoded.getvalue()).decode()
    result = await tools.invoke("image_stats", {"image": sent})
    assert result.error.kind == "invalid_arguments" and "40 megapixels" in result.observation()


async def test_a_face_is_found_in_a_photograph_and_framed(tools):
    from skimage import data

    astronaut = PILImage.fromarray(data.astronaut())  # 512x512, one face near the top middle
    result = await tools.invoke("detect_faces", {"image": data_url(astronaut, "JPEG")})
    found = json_part(result)
    assert found["faces"] == 1 and found["image"] == {"width": 512, "height": 512}
    (box,) = found["boxes"]
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert 200 < centre[0] < 250 and 90 < centre[1] < 140 and 70 < box["width"] < 130
    framed = stored(tools, result)
    assert framed.format == "JPEG" and framed.size == (512, 512)  # a JPEG photo stays a JPEG
    assert np.asarray(framed)[box["y"], box["x"] + box["width"] // 2].tolist() == pytest.approx([255, 0, 0], abs=60)
    # The boxes chain into draw_boxes and crop_image as they are.
    (artifact,) = result.artifacts
    boxed = await tools.invoke("draw_boxes", {"image": artifact.file_id, "boxes": found["boxes"], "labels": ["face"]})
    face = await tools.invoke("crop_image", {"image": artifact.file_id, **box})
    assert boxed.ok and stored(tools, face).size == (box["width"], box["height"])
    nobody = await tools.invoke("detect_faces", {"image": data_url(rectangle_picture())})
    assert json_part(nobody)["faces"] == 0 and len(nobody.artifacts) == 1


def test_vision_tools_are_builtins_served_over_http(registry, tmp_path):
    running = RunningServer(create_app(Settings(data_dir=tmp_path / "server"), registry))
    try:
        listed = {entry["name"] for entry in httpx.get(f"{running.url}/v1/tools").json()["data"]}
        assert {tool.name for tool in VISION_TOOLS} <= listed
        png = io.BytesIO()
        rectangle_picture().save(png, "PNG")
        response = httpx.post(f"{running.url}/v1/tools/resize_image", data={"width": "100"},
                              files={"image": ("rect.png", png.getvalue(), "image/png")}, timeout=30)
        body = response.json()
        assert response.status_code == 200 and not body["is_error"], body
        (image,) = body["content"]
        assert (image["width"], image["height"], image["filename"]) == (100, 50, "rect-resized.png")
        content = httpx.get(f"{running.url}/v1/files/{image['file_id']}/content")
        assert PILImage.open(io.BytesIO(content.content)).size == (100, 50)
        bad = httpx.post(f"{running.url}/v1/tools/crop_image", timeout=30, json={
            "image": image["file_id"], "x": 90, "y": 0, "width": 20, "height": 5})
        assert bad.status_code == 200 and bad.json()["is_error"] and "reaches outside" in bad.text
    finally:
        running.stop()
