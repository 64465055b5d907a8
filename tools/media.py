"""`Image` and `File`: values a tool takes or returns that are bytes, not JSON.

On the way in, either accepts a stored file id (`file-…`), a `data:` URL, raw bytes, another
`Image`/`File`, a PIL image, or — only where the call's context allows it — a local path.
On the way out, the invoker stores it in the file store and the caller gets the id.
In JSON schemas both are strings marked with `x-agentd-type`, so an HTTP client knows to
send such a field as a multipart upload and an agent knows it may pass a file id.
"""

from __future__ import annotations

import base64
import binascii
import io
import mimetypes
import re
import urllib.parse
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema

from tools.context import current_context
from tools.files import FileNotFound

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,(?P<data>.*)$", re.S)


class File:
    """Bytes with a media type and a name; `file_id` is set once it is in a file store."""

    kind = "file"
    description = "a file: a stored file id (file-…) or a data: URL"

    def __init__(self, data: bytes, mime_type: str = "application/octet-stream", filename: str | None = None,
                 file_id: str | None = None):
        self.data = bytes(data)
        self.mime_type = mime_type
        self.filename = filename or f"{self.kind}{mimetypes.guess_extension(mime_type) or ''}"
        self.file_id = file_id
        self._check()

    def _check(self) -> None:
        """Subclasses refuse bytes that are not what they claim to be."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.filename!r}, {self.mime_type}, {len(self.data)} bytes)"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.data == self.data and other.mime_type == self.mime_type

    def to_data_url(self) -> str:
        """RFC 2397 allows attribute=value parameters; `name` keeps the filename across the trip."""
        name = urllib.parse.quote(self.filename, safe="")
        return f"data:{self.mime_type};name={name};base64,{base64.b64encode(self.data).decode()}"

    @classmethod
    def from_value(cls, value: Any) -> File:
        if isinstance(value, cls):
            return value
        if isinstance(value, File):
            return cls(value.data, value.mime_type, value.filename, value.file_id)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls._from_bytes(bytes(value))
        if isinstance(value, dict) and isinstance(value.get("image_url"), dict):
            value = value["image_url"].get("url", "")  # an OpenAI `image_url` content part, as a chat client sends it
        if not isinstance(value, str):
            return cls._from_other(value)
        if value.startswith("data:"):
            return cls._from_data_url(value)
        if value.startswith("file-"):
            return cls._from_store(value)
        return cls._from_path(value)

    @classmethod
    def _from_bytes(cls, data: bytes, mime_type: str | None = None, filename: str | None = None) -> File:
        return cls(data, mime_type or "application/octet-stream", filename)

    @classmethod
    def _from_other(cls, value: Any) -> File:
        raise ValueError(f"expected {cls.description}, got {type(value).__name__}")

    @classmethod
    def _from_data_url(cls, url: str) -> File:
        match = _DATA_URL.match(url)
        if not match:
            raise ValueError("malformed data: URL")
        try:
            data = base64.b64decode(match["data"], validate=True) if match["b64"] else match["data"].encode()
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"data: URL is not valid base64 ({error})") from None
        params = dict(part.split("=", 1) for part in match["params"].split(";") if "=" in part)
        name = urllib.parse.unquote(params["name"]) if "name" in params else None
        return cls._from_bytes(data, match["mime"], name)

    @classmethod
    def _from_store(cls, file_id: str) -> File:
        store = current_context().file_store
        if store is None:
            raise ValueError(f"{file_id} names a stored file, but this call has no file store")
        try:
            stored = store.get(file_id)
        except FileNotFound as error:
            raise ValueError(str(error)) from None
        made = cls._from_bytes(store.read(file_id), stored.mime_type, stored.filename)
        made.file_id = file_id
        return made

    @classmethod
    def _from_path(cls, path: str) -> File:
        if not current_context().allow_local_paths:
            raise ValueError(f"expected {cls.description}; local paths are not accepted from this caller")
        file = Path(path).expanduser()
        if not file.is_file():
            raise ValueError(f"no such file: {path}")
        return cls._from_bytes(file.read_bytes(), mimetypes.guess_type(file.name)[0], file.name)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.from_value,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda value: value.file_id or value.to_data_url()))

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        return {"type": "string", "description": cls.description, "x-agentd-type": cls.kind}


class Image(File):
    """An image (PNG, JPEG, GIF, WebP, BMP…); `to_pil()` and `Image.from_pil()` convert to Pillow."""

    kind = "image"
    description = "an image: a stored file id (file-…) or a data: URL"

    def _check(self) -> None:
        from PIL import Image as PILImage, UnidentifiedImageError

        from pipelines.vision import MAX_PIXELS, check_size  # the pictures this server holds in memory

        try:
            with PILImage.open(io.BytesIO(self.data)) as picture:  # reads the header only: nothing decoded yet
                self.width, self.height = picture.size
                detected = PILImage.MIME.get(picture.format or "", self.mime_type)
        except PILImage.DecompressionBombError:
            raise ValueError(f"the picture is far over this server's limit of {MAX_PIXELS // 10**6} megapixels "
                             "(a decompression bomb?)") from None
        except (UnidentifiedImageError, OSError):
            raise ValueError("not an image this server can read (PNG, JPEG, GIF, WebP, BMP, TIFF…)") from None
        # A few kilobytes of PNG can decode to gigabytes: refused before any tool decodes it.
        check_size(self.width, self.height, "the picture")
        if detected != self.mime_type:
            self.mime_type = detected
            self.filename = str(Path(self.filename).with_suffix(mimetypes.guess_extension(detected) or ""))

    def __repr__(self) -> str:
        return f"Image({self.filename!r}, {self.mime_type}, {self.width}x{self.height})"

    def to_pil(self):
        from PIL import Image as PILImage

        picture = PILImage.open(io.BytesIO(self.data))
        picture.load()
        return picture

    @classmethod
    def from_pil(cls, picture, format: str = "PNG") -> Image:
        buffer = io.BytesIO()
        picture.save(buffer, format=format)
        return cls(buffer.getvalue(), f"image/{format.lower()}")

    @classmethod
    def _from_bytes(cls, data: bytes, mime_type: str | None = None, filename: str | None = None) -> Image:
        return cls(data, mime_type or "image/png", filename)

    @classmethod
    def _from_other(cls, value: Any) -> Image:
        from PIL import Image as PILImage

        if isinstance(value, PILImage.Image):
            return cls.from_pil(value)
        return super()._from_other(value)
