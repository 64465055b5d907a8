"""Vision tools over OpenCV: faces, edges, resize, crop, rotate, statistics, boxes, format conversion.

Each takes an `Image` (a file id or data: URL) and returns a new `Image` (stored by the invoker, so
the caller gets its file id) and/or JSON. Pictures keep their format when it is JPEG or WebP
(a photo stays small) and become PNG otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import cv2
import numpy as np
from pydantic import BaseModel, Field, WithJsonSchema

from pipelines import vision
from tools.base import ToolError
from tools.builtin.choices import AT_LEFT, AT_TOP, HIGH, WIDE
from tools.decorator import tool
from tools.media import Image
from tools.schema import said_as, said_or_read

ImageFormat = Annotated[Literal["png", "jpeg", "webp", "bmp"], said_as(jpeg=["jpg"])]


class BoxArgument(BaseModel):
    """A rectangle in pixels, the shape `detect_faces` returns."""

    x: int = Field(description="left edge, pixels from the left")
    y: int = Field(description="top edge, pixels from the top")
    width: int = Field(ge=1, description="width in pixels")
    height: int = Field(ge=1, description="height in pixels")


# Inlined rather than a `$ref` to `$defs`: an agent's step schema nests each tool's parameters,
# where a root-relative reference no longer resolves.
_BOX_SCHEMA = {"type": "object", "properties": {
    "x": {"type": "integer"}, "y": {"type": "integer"},
    "width": {"type": "integer", "minimum": 1}, "height": {"type": "integer", "minimum": 1}},
    "required": ["x", "y", "width", "height"]}
Boxes = Annotated[list[BoxArgument], WithJsonSchema({"type": "array", "items": _BOX_SCHEMA})]


@contextmanager
def _readable_errors() -> Iterator[None]:
    """Bad parameters reach the model as a plain message it can act on, not a traceback."""
    try:
        yield
    except ValueError as error:
        raise ToolError(str(error)) from None
    except cv2.error as error:
        raise ToolError(f"OpenCV could not process the image: {error.err or error}") from None


def _decoded(image: Image):
    """The Pillow image, refusing huge pictures before their pixels are unpacked."""
    try:
        vision.check_size(image.width, image.height, "the input image")
    except ValueError as error:
        raise ToolError(f"{error}; send a smaller picture") from None
    return image.to_pil()


def _pixels(image: Image) -> np.ndarray:
    return vision.from_pil(_decoded(image))


def _picture(pixels: np.ndarray, source: Image, suffix: str, format: str | None = None, quality: int = 90) -> Image:
    """An Image named after its source (`photo-faces.jpg`), in `format` or the source's own."""
    if format is None:
        format = {"image/jpeg": "jpeg", "image/webp": "webp"}.get(source.mime_type, "png")
    data, mime_type = vision.encode(pixels, format, quality=quality)
    extension = vision.FORMATS[format]
    return Image(data, mime_type, f"{Path(source.filename).stem}-{suffix}{extension}")


@tool
def detect_faces(image: Image, min_size: Annotated[int, Field(ge=1)] = 30,
                 scale_factor: Annotated[float, Field(gt=1.0, le=2.0)] = 1.1,
                 min_neighbors: Annotated[int, Field(ge=0, le=50)] = 5) -> tuple[dict, Image]:
    """Find the faces (people) in a photo: returns each face's box and a copy with the faces framed in red.

    The boxes ({x, y, width, height}) can be passed to draw_boxes or crop_image.

    Args:
        image: the photo to look for faces in.
        min_size: the smallest face side to report, in pixels.
        scale_factor: search step over 1.0; lower (1.05) finds more faces but is slower.
        min_neighbors: how sure a face must be; higher gives fewer false faces.
    """
    pixels = _pixels(image)
    with _readable_errors():
        boxes = vision.detect_faces(pixels, min_size=min_size, scale_factor=scale_factor, min_neighbors=min_neighbors)
        framed = vision.draw_boxes(pixels, boxes)
    found = {"faces": len(boxes), "boxes": [box.to_dict() for box in boxes],
             "image": {"width": image.width, "height": image.height}}
    return found, _picture(framed, image, "faces")


@tool
def detect_edges(image: Image, low: Annotated[float, Field(ge=0)] = 100,
                 high: Annotated[float, Field(gt=0)] = 200) -> tuple[dict, Image]:
    """Draw the edges / outlines of a picture (Canny edge detection): white lines on black.

    Also returns the fraction of pixels that are edges (0 to 1), a measure of how busy the picture is.

    Args:
        image: the picture to find edges in.
        low: lower gradient threshold; lower keeps fainter edges.
        high: upper gradient threshold (at least low); a line must pass it somewhere to be kept.
    """
    pixels = _pixels(image)
    with _readable_errors():
        edges, fraction = vision.detect_edges(pixels, low=low, high=high)
    measured = {"edge_fraction": round(fraction, 6), "width": image.width, "height": image.height}
    return measured, _picture(edges, image, "edges", "png")


@tool(needs_one_of=[("width", "height")])
def resize_image(image: Image, width: Annotated[int | None, Field(ge=1), WIDE] = None,
                 height: Annotated[int | None, Field(ge=1), HIGH] = None, keep_aspect: bool = True) -> Image:
    """Resize a picture: make it N pixels wide and/or high, bigger or smaller.

    "Make it 512 wide": width=512 (the height follows, keeping the proportions).

    Args:
        image: the picture to resize.
        width: the new width in pixels; leave out to follow the height.
        height: the new height in pixels; leave out to follow the width.
        keep_aspect: keep the proportions; with both width and height the picture fits inside that box.
            False stretches it to exactly width x height.
    """
    pixels = _pixels(image)
    with _readable_errors():
        return _picture(vision.resize(pixels, width=width, height=height, keep_aspect=keep_aspect), image, "resized")


@tool
def crop_image(image: Image, x: Annotated[int, Field(ge=0), AT_LEFT, said_or_read()],
               y: Annotated[int, Field(ge=0), AT_TOP, said_or_read()],
               width: Annotated[int, Field(ge=1), WIDE, said_or_read()],
               height: Annotated[int, Field(ge=1), HIGH, said_or_read()]) -> Image:
    """Cut out a rectangle of a picture (crop it), e.g. a face box from detect_faces.

    Args:
        image: the picture to crop.
        x: left edge of the rectangle, in pixels from the left.
        y: top edge of the rectangle, in pixels from the top.
        width: width of the rectangle in pixels.
        height: height of the rectangle in pixels.
    """
    pixels = _pixels(image)
    with _readable_errors():
        return _picture(vision.crop(pixels, x=x, y=y, width=width, height=height), image, "cropped")


@tool
def rotate_image(image: Image, degrees: float, expand: bool = True) -> Image:
    """Rotate / turn a picture by some degrees; positive turns it counter-clockwise (left), negative clockwise.

    Args:
        image: the picture to rotate.
        degrees: the angle; 90 turns a quarter to the left, -90 a quarter to the right, 180 upside down.
        expand: grow the canvas so no corner is cut off (False keeps the original size).
    """
    pixels = _pixels(image)
    with _readable_errors():
        return _picture(vision.rotate(pixels, degrees, expand=expand), image, "rotated")


@tool
def image_stats(image: Image) -> dict:
    """Measure a picture: its size, colour mode, and brightness statistics and histogram per colour channel.

    Per channel (L for gray; R, G, B and A for colour): mean, std, min and max (0-255) and a 16-bin
    histogram of pixel counts, where bin i covers the values 16*i to 16*i+15.

    Args:
        image: the picture to measure.
    """
    picture = _decoded(image)
    with _readable_errors():
        channels = vision.channel_stats(vision.from_pil(picture))
    return {"width": image.width, "height": image.height, "mode": picture.mode, "format": image.mime_type,
            "pixels": image.width * image.height, "channels": channels}


@tool
def draw_boxes(image: Image, boxes: Boxes, color: str = "red",
               thickness: Annotated[int, Field(ge=1, le=50)] = 2, labels: list[str] | None = None) -> Image:
    """Draw rectangles (boxes) on a picture, with optional labels, e.g. the boxes from detect_faces.

    Args:
        image: the picture to draw on.
        boxes: the rectangles, each {"x", "y", "width", "height"} in pixels.
        color: line colour: a name (red, green, blue, yellow, white, black…) or a hex code like #ff8800.
        thickness: line thickness in pixels.
        labels: one text per box, written above it.
    """
    pixels = _pixels(image)
    with _readable_errors():
        shapes = [vision.Box(box.x, box.y, box.width, box.height) for box in boxes]
        return _picture(vision.draw_boxes(pixels, shapes, color=color, thickness=thickness, labels=labels),
                        image, "boxes")


@tool
def convert_image(image: Image, format: ImageFormat = "png", grayscale: Annotated[bool, said_as(true=[
        "black and white", "grayscale", "greyscale", "gray", "grey", "colour", "color", "colours", "colors",
        "desaturate", "desaturated", "monochrome"], surely={"true": [
        "black and white", "black-and-white", "grayscale", "greyscale", "gray", "grey", "desaturate", "desaturated",
        "monochrome"]})] = False,
                  quality: Annotated[int, Field(ge=1, le=100)] = 90) -> Image:
    """Convert a picture to another file format (png, jpeg, webp, bmp) and/or to black and white (grayscale).

    Args:
        image: the picture to convert.
        format: the file format to write: png, jpeg, webp or bmp.
        grayscale: make it black and white (shades of gray).
        quality: 1-100, for jpeg and webp only; lower is smaller and blurrier.
    """
    pixels = _pixels(image)
    with _readable_errors():
        if grayscale:
            pixels = vision.to_gray(pixels)
        return _picture(pixels, image, "gray" if grayscale else "converted", format, quality)


VISION_TOOLS = [detect_faces, detect_edges, resize_image, crop_image, rotate_image, image_stats, draw_boxes,
                convert_image]
