"""What a tool call gives back: typed content parts, or a structured error an agent can read."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from tools.context import ToolContext
from tools.media import File, Image

ErrorKind = Literal["invalid_arguments", "unknown_tool", "timeout", "tool_error", "exception", "remote_error"]


@dataclass(frozen=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True)
class JsonPart:
    value: Any
    type: Literal["json"] = "json"


@dataclass(frozen=True)
class ArtifactPart:
    """An image or file a tool produced; `file_id` once stored, `data` when kept inline."""

    kind: Literal["image", "file"]
    mime_type: str
    filename: str
    size: int
    file_id: str | None = None
    data: bytes | None = field(default=None, repr=False)
    width: int | None = None
    height: int | None = None
    type: Literal["artifact"] = "artifact"

    def describe(self) -> str:
        shape = f" {self.width}x{self.height}" if self.width else ""
        return f"[{self.kind} {self.file_id or self.filename}: {self.mime_type}{shape}, {self.size} bytes]"

    def load(self, context: ToolContext) -> File:
        cls = Image if self.kind == "image" else File
        if self.data is not None:
            return cls(self.data, self.mime_type, self.filename, self.file_id)
        if context.file_store is None:
            raise ValueError(f"{self.file_id} is stored, but there is no file store to read it from")
        return cls(context.file_store.read(self.file_id), self.mime_type, self.filename, self.file_id)


Part = TextPart | JsonPart | ArtifactPart


@dataclass(frozen=True)
class ToolFailure:
    kind: ErrorKind
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolResult:
    tool: str
    content: tuple[Part, ...] = ()
    error: ToolFailure | None = None
    call_id: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def value(self) -> Any:
        """The plain value of a one-part result (text or JSON), for programs that call tools."""
        if len(self.content) == 1 and not isinstance(self.content[0], ArtifactPart):
            part = self.content[0]
            return part.text if isinstance(part, TextPart) else part.value
        return None

    @property
    def artifacts(self) -> list[ArtifactPart]:
        return [part for part in self.content if isinstance(part, ArtifactPart)]

    def observation(self, max_chars: int = 4000) -> str:
        """The text a language model reads after the call."""
        if self.error is not None:
            text = f"Error ({self.error.kind}) from tool {self.tool!r}: {self.error.message}"
        else:
            text = "\n".join(_part_text(part) for part in self.content) or "(the tool returned nothing)"
        if len(text) > max_chars:
            text = text[:max_chars] + f"\n… [{len(text) - max_chars} more characters cut]"
        return text

    def to_dict(self, inline: bool = True, context: ToolContext | None = None) -> dict[str, Any]:
        """JSON for the HTTP tool server; `inline` adds base64 data to artifacts."""
        return {
            "object": "tool.result", "tool": self.tool, "call_id": self.call_id, "is_error": not self.ok,
            "content": [_part_dict(part, inline, context) for part in self.content],
            "error": None if self.error is None else {"type": self.error.kind, "message": self.error.message,
                                                       **({"details": self.error.details} if self.error.details else {})},
            "duration_ms": round(self.duration_s * 1000, 1),
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ToolResult:
        parts: list[Part] = []
        for item in body.get("content") or []:
            if item["type"] == "text":
                parts.append(TextPart(item["text"]))
            elif item["type"] == "json":
                parts.append(JsonPart(item["json"]))
            else:
                data = base64.b64decode(item["data"]) if item.get("data") else None
                parts.append(ArtifactPart(kind=item["kind"], mime_type=item["mime_type"], filename=item["filename"],
                                          size=item["bytes"], file_id=item.get("file_id"), data=data,
                                          width=item.get("width"), height=item.get("height")))
        error = body.get("error")
        failure = ToolFailure(error["type"], error["message"], error.get("details") or {}) if error else None
        return cls(tool=body["tool"], content=tuple(parts), error=failure, call_id=body.get("call_id"),
                   duration_s=(body.get("duration_ms") or 0) / 1000)


def _part_text(part: Part) -> str:
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, JsonPart):
        return json.dumps(part.value, ensure_ascii=False)
    return part.describe()


def _part_dict(part: Part, inline: bool, context: ToolContext | None) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, JsonPart):
        return {"type": "json", "json": part.value}
    out = {"type": part.kind, "kind": part.kind, "file_id": part.file_id, "mime_type": part.mime_type,
           "filename": part.filename, "bytes": part.size, "width": part.width, "height": part.height}
    if inline:
        data = part.data if part.data is not None else (part.load(context).data if context else None)
        out["data"] = base64.b64encode(data).decode() if data is not None else None
    return out


def to_parts(value: Any, context: ToolContext) -> tuple[Part, ...]:
    """Turn whatever a tool function returned into parts, storing images and files."""
    if value is None:
        return ()
    if isinstance(value, ToolResult):
        return value.content
    if isinstance(value, str):
        return (TextPart(value),)
    if isinstance(value, (File, bytes, bytearray)) or _is_pil(value):
        return (artifact_part(value, context),)
    if isinstance(value, (list, tuple)) and any(isinstance(item, File) or _is_pil(item) for item in value):
        return tuple(part for item in value for part in to_parts(item, context))
    if isinstance(value, BaseModel):
        return (JsonPart(value.model_dump(mode="json")),)
    return (JsonPart(to_jsonable_python(value, fallback=str)),)


def _is_pil(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("PIL.") and hasattr(value, "save")


def artifact_part(value: Any, context: ToolContext) -> ArtifactPart:
    """Store an Image/File/PIL image/bytes in the context's file store (if any) and describe it."""
    if isinstance(value, (bytes, bytearray)):
        value = File(bytes(value))
    elif _is_pil(value):
        value = Image.from_pil(value)
    if context.file_store is not None and value.file_id is None:
        value.file_id = context.file_store.put(value.data, value.filename, "assistants_output", value.mime_type).id
    kind = "image" if isinstance(value, Image) else "file"
    return ArtifactPart(kind=kind, mime_type=value.mime_type, filename=value.filename, size=len(value.data),
                        file_id=value.file_id, data=None if value.file_id else value.data,
                        width=getattr(value, "width", None), height=getattr(value, "height", None))
