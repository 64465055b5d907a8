"""OpenCV vision: plain functions over numpy images, and conversions to and from Pillow.

Arrays are uint8, OpenCV's channel order: gray (H, W), BGR (H, W, 3) or BGRA (H, W, 4).
Every function refuses a bad parameter with a ValueError whose message says what was wrong,
so a tool can hand it to a model as it is. Imports libraries only (numpy, OpenCV, Pillow).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

# A 40-megapixel BGRA image is 160 MB; a few such copies per call is what one server should hold.
MAX_PIXELS = 40_000_000
HISTOGRAM_BINS = 16
FORMATS = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg", "webp": ".webp", "bmp": ".bmp"}
MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp", ".bmp": "image/bmp"}
FACE_CASCADE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels; (x, y) is its top-left corner."""

    x: int
    y: int
    width: int
    height: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


# -- conversions -----------------------------------------------------------------------------

def from_pil(picture: Any) -> np.ndarray:
    """A Pillow image as gray, BGR or BGRA; palettes and odd modes become RGB(A) or gray first."""
    mode = picture.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in picture.info):
        return cv2.cvtColor(np.asarray(picture.convert("RGBA")), cv2.COLOR_RGBA2BGRA)
    if mode in ("1", "L", "I", "I;16", "F"):
        return np.ascontiguousarray(np.asarray(picture.convert("L")))
    return cv2.cvtColor(np.asarray(picture.convert("RGB")), cv2.COLOR_RGB2BGR)


def to_pil(image: np.ndarray) -> Any:
    """The Pillow image of a gray, BGR or BGRA array (mode L, RGB or RGBA)."""
    from PIL import Image as PILImage

    if image.ndim == 2:
        return PILImage.fromarray(image, "L")
    if image.shape[2] == 4:
        return PILImage.fromarray(cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA), "RGBA")
    return PILImage.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), "RGB")


def check_size(width: int, height: int, what: str = "the image") -> None:
    """Refuse sizes this server will not hold in memory (more than MAX_PIXELS)."""
    if width < 1 or height < 1:
        raise ValueError(f"{what} would be {width}x{height}; both sides must be at least 1 pixel")
    if width * height > MAX_PIXELS:
        raise ValueError(f"{what} would be {width}x{height} ({width * height / 1e6:.1f} megapixels); "
                         f"the limit is {MAX_PIXELS / 1e6:g} megapixels")


def to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Colour without alpha; transparent pixels are laid over white, as a viewer shows them."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 3:
        return image
    alpha = image[:, :, 3:4].astype(np.float32) / 255.0
    over_white = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(over_white + 0.5, 0, 255).astype(np.uint8)


def parse_color(color: str) -> tuple[int, int, int]:
    """A colour name (`red`) or hex code (`#ff0000`) as a BGR triple."""
    from PIL import ImageColor

    try:
        red, green, blue = ImageColor.getrgb(color.strip())[:3]
    except (ValueError, AttributeError):
        raise ValueError(f"unknown colour {color!r}; use a name such as red, green, blue, yellow, white, or a "
                         "hex code such as #ff8800") from None
    return blue, green, red


# -- faces -----------------------------------------------------------------------------------

_cascade: cv2.CascadeClassifier | None = None
# detectMultiScale sets the image on the classifier's shared feature evaluator, so calls on one
# classifier must not overlap; the same lock guards the one-time load.
_cascade_lock = threading.Lock()


def _face_cascade() -> cv2.CascadeClassifier:
    global _cascade
    if _cascade is None:
        classifier = cv2.CascadeClassifier(cv2.data.haarcascades + FACE_CASCADE)
        if classifier.empty():
            raise RuntimeError(f"OpenCV's {FACE_CASCADE} could not be loaded from {cv2.data.haarcascades}")
        _cascade = classifier
    return _cascade


def detect_faces(image: np.ndarray, *, min_size: int = 30, scale_factor: float = 1.1,
                 min_neighbors: int = 5) -> list[Box]:
    """Frontal faces found by OpenCV's Haar cascade, largest first.

    Args:
        image: gray, BGR or BGRA.
        min_size: the smallest face side, in pixels, worth reporting.
        scale_factor: how much the search window grows per pass (over 1; smaller is slower and finds more).
        min_neighbors: how many overlapping hits a face needs (higher: fewer false faces).
    """
    if min_size < 1:
        raise ValueError(f"min_size must be at least 1 pixel, got {min_size}")
    if not 1.0 < scale_factor <= 2.0:
        raise ValueError(f"scale_factor must be over 1.0 and at most 2.0, got {scale_factor}")
    if min_neighbors < 0:
        raise ValueError(f"min_neighbors must be 0 or more, got {min_neighbors}")
    # Equalising spreads the contrast of dim or washed-out photos, as OpenCV's own face samples do.
    gray = cv2.equalizeHist(to_gray(image))
    with _cascade_lock:
        found = _face_cascade().detectMultiScale(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                                 minSize=(min_size, min_size))
    boxes = [Box(int(x), int(y), int(w), int(h)) for x, y, w, h in found]
    return sorted(boxes, key=lambda box: box.width * box.height, reverse=True)


def draw_boxes(image: np.ndarray, boxes: list[Box], *, color: str = "red", thickness: int = 2,
               labels: list[str] | None = None) -> np.ndarray:
    """A colour copy of `image` with each box outlined and, when given, its label above it."""
    if thickness < 1 or thickness > 50:
        raise ValueError(f"thickness must be 1 to 50 pixels, got {thickness}")
    if labels is not None and len(labels) != len(boxes):
        raise ValueError(f"labels has {len(labels)} entries but there are {len(boxes)} boxes; give one label per box")
    bgr = parse_color(color)
    height, width = image.shape[:2]
    canvas = to_bgr(image).copy()
    for index, box in enumerate(boxes):
        if box.width < 1 or box.height < 1:
            raise ValueError(f"box {index} is {box.width}x{box.height}; width and height must be at least 1")
        if box.x >= width or box.y >= height or box.x + box.width <= 0 or box.y + box.height <= 0:
            raise ValueError(f"box {index} {box.to_dict()} lies outside the {width}x{height} image")
        corner = (box.x + box.width - 1, box.y + box.height - 1)
        cv2.rectangle(canvas, (box.x, box.y), corner, bgr, thickness)
        if labels:
            _label(canvas, labels[index], box, bgr)
    return canvas


def _label(canvas: np.ndarray, text: str, box: Box, color: tuple[int, int, int]) -> None:
    scale = max(0.4, min(canvas.shape[:2]) / 800)
    (_, text_height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    # Above the box when there is room, otherwise just inside its top edge.
    baseline_y = box.y - 4 if box.y - 4 - text_height >= 0 else box.y + text_height + 4
    cv2.putText(canvas, text, (max(box.x, 0), baseline_y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


# -- edges, geometry -------------------------------------------------------------------------

def detect_edges(image: np.ndarray, *, low: float = 100, high: float = 200) -> tuple[np.ndarray, float]:
    """Canny edges (white on black) and the fraction of pixels that are edges."""
    if low < 0 or high <= 0 or low > high:
        raise ValueError(f"need 0 <= low <= high and high > 0, got low={low}, high={high}")
    edges = cv2.Canny(to_gray(image), low, high)
    return edges, float(np.count_nonzero(edges)) / edges.size


def resize(image: np.ndarray, *, width: int | None = None, height: int | None = None,
           keep_aspect: bool = True) -> np.ndarray:
    """Resize to `width` and/or `height`.

    With keep_aspect, one side given sets the other in proportion, and both given fit the image
    inside width x height. Without it, a side not given stays as it is.
    """
    old_height, old_width = image.shape[:2]
    if width is None and height is None:
        raise ValueError("give a width, a height, or both")
    for name, value in (("width", width), ("height", height)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1 pixel, got {value}")
    if keep_aspect:
        scale = min(width / old_width if width else np.inf, height / old_height if height else np.inf)
        new_width, new_height = max(1, round(old_width * scale)), max(1, round(old_height * scale))
    else:
        new_width, new_height = width or old_width, height or old_height
    check_size(new_width, new_height, "the resized image")
    shrinking = new_width * new_height < old_width * old_height
    return cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def crop(image: np.ndarray, *, x: int, y: int, width: int, height: int) -> np.ndarray:
    """The region whose top-left corner is (x, y); it must lie inside the image."""
    image_height, image_width = image.shape[:2]
    if width < 1 or height < 1:
        raise ValueError(f"the crop is {width}x{height}; width and height must be at least 1")
    if x < 0 or y < 0 or x + width > image_width or y + height > image_height:
        raise ValueError(f"the crop x={x}, y={y}, width={width}, height={height} reaches outside the "
                         f"{image_width}x{image_height} image (x + width <= {image_width}, "
                         f"y + height <= {image_height})")
    return image[y:y + height, x:x + width].copy()


def rotate(image: np.ndarray, degrees: float, *, expand: bool = True) -> np.ndarray:
    """Rotate counter-clockwise by `degrees` (negative: clockwise); uncovered corners are black
    (transparent with alpha). With expand the canvas grows to hold the whole picture."""
    if not np.isfinite(degrees):
        raise ValueError(f"degrees must be a finite number, got {degrees}")
    turns = degrees / 90
    if expand and turns == round(turns):
        # Quarter turns are exact pixel moves, with no resampling blur.
        return np.ascontiguousarray(np.rot90(image, int(round(turns)) % 4))
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), degrees, 1.0)
    new_width, new_height = width, height
    if expand:
        cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
        new_width, new_height = round(height * sin + width * cos), round(height * cos + width * sin)
        check_size(new_width, new_height, "the rotated image")
        matrix[0, 2] += (new_width - width) / 2
        matrix[1, 2] += (new_height - height) / 2
    return cv2.warpAffine(image, matrix, (new_width, new_height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# -- measurements and encoding ---------------------------------------------------------------

def channel_names(image: np.ndarray) -> list[str]:
    channels = 1 if image.ndim == 2 else image.shape[2]
    return {1: ["L"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}[channels]


def channel_stats(image: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per channel (named L, or R G B [A]): mean, std, min, max and a 16-bin histogram of pixel counts."""
    planes = [image] if image.ndim == 2 else list(cv2.split(image))
    if len(planes) >= 3:
        planes[0], planes[2] = planes[2], planes[0]  # BGR(A) -> RGB(A), the order people name
    stats = {}
    for name, plane in zip(channel_names(image), planes):
        counts, _ = np.histogram(plane, bins=HISTOGRAM_BINS, range=(0, 256))
        stats[name] = {"mean": round(float(plane.mean()), 3), "std": round(float(plane.std()), 3),
                       "min": int(plane.min()), "max": int(plane.max()), "histogram": counts.tolist()}
    return stats


def encode(image: np.ndarray, format: str, *, quality: int = 90) -> tuple[bytes, str]:
    """Encoded bytes and their media type; JPEG has no alpha, so transparency is laid over white."""
    extension = FORMATS.get(format.lower().lstrip("."))
    if extension is None:
        raise ValueError(f"unknown format {format!r}; use one of png, jpeg, webp, bmp")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1 to 100, got {quality}")
    params: list[int] = []
    if extension == ".jpg":
        image = image if image.ndim == 2 else to_bgr(image)
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif extension == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    ok, buffer = cv2.imencode(extension, image, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {format}")
    return buffer.tobytes(), MIME_TYPES[extension]
