"""The files one agent run knows: pictures in the conversation and the artifacts its tools made.

They serve three ends: each artifact gets an absolute URL (`<server>/v1/files/{id}/content`),
the final answer links the pictures the run made, and constrained decoding restricts an
image or file argument to these ids (newest first), so a small model copies a real id instead
of inventing one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# How agentd/server/agents.py names a stored picture in a user turn, how an observation describes an
# artifact (`[image file-…: image/png 8x8, 90 bytes]`), and a link an earlier answer of the thread gave.
_NAMED = re.compile(r"\[(image|file) (file-[A-Za-z0-9]+)[\]:]")
_LINKED = re.compile(r"(!?)\[[^\]]*\]\([^)\s]*/files/(file-[A-Za-z0-9]+)/content\)")
# A stored file named by its bare id ("crop file-3f… to the face"), as a person who uploaded it through
# the Files API writes it.
_BARE = re.compile(r"(?<![\w-])(file-[A-Za-z0-9]+)(?![\w-])")

FILE_TYPES = ("image", "file")


@dataclass(frozen=True)
class KnownFile:
    file_id: str
    kind: str  # "image" or "file"
    filename: str = ""
    made: bool = False  # made by a tool of this run (linked in the final answer)


class RunFiles:
    """File ids a run may pass to tools, oldest first as they became known.

    Args:
        base_url: the server's /v1 URL as the client reached it; None gives relative links.
    """

    def __init__(self, base_url: str | None = None):
        self.base_url = (base_url or "/v1").rstrip("/")
        self._known: dict[str, KnownFile] = {}

    def url(self, file_id: str) -> str:
        return f"{self.base_url}/files/{file_id}/content"

    def learn_from_text(self, text: str) -> None:
        """Ids named in a chat turn: pictures sent (`[image file-…]`) or linked in an earlier answer."""
        for kind, file_id in _NAMED.findall(text):
            self._add(KnownFile(file_id, kind))
        for bang, file_id in _LINKED.findall(text):
            self._add(KnownFile(file_id, "image" if bang else "file"))

    def learn_bare_ids(self, text: str, kind_of: Callable[[str], str | None]) -> None:
        """Ids named bare in a chat turn (`file-…`): `kind_of` says what the store holds under one
        ("image", "file"; None: nothing, and the id is not learned).

        Without them, once a tool of the run made a picture (detect_faces' framed copy), a picture
        argument could only name that copy: asked to find the face in file-… and crop it out, the model
        had to crop the framed copy instead of the person's picture."""
        for file_id in _BARE.findall(text):
            if file_id not in self._known and (kind := kind_of(file_id)) is not None:
                self._add(KnownFile(file_id, kind))

    def add_artifact(self, file_id: str, kind: str, filename: str) -> str:
        """Record what a tool made; returns its URL."""
        self._known.pop(file_id, None)  # made again (a tool returning its input): now the newest
        self._add(KnownFile(file_id, kind if kind in FILE_TYPES else "file", filename, made=True))
        return self.url(file_id)

    def ids(self, kind: str = "file") -> list[str]:
        """Known ids newest first; `image` keeps only pictures, `file` takes any file."""
        return [f.file_id for f in reversed(self._known.values()) if kind == "file" or f.kind == kind]

    def made(self) -> list[KnownFile]:
        return [f for f in self._known.values() if f.made]

    def _add(self, known: KnownFile) -> None:
        if known.file_id not in self._known:
            self._known[known.file_id] = known


def with_file_choices(schema: Any, files: RunFiles) -> Any:
    """A copy of a JSON schema where every `x-agentd-type: image|file` string may only be a known id.

    With no id of the right kind the property is left as it was (the tool still accepts a
    data: URL, and its own validation explains a bad value).
    """
    if isinstance(schema, list):
        return [with_file_choices(item, files) for item in schema]
    if not isinstance(schema, dict):
        return schema
    narrowed = {key: with_file_choices(value, files) for key, value in schema.items()}
    kind = schema.get("x-agentd-type")
    if kind in FILE_TYPES and schema.get("type") == "string":
        ids = files.ids(kind)
        if ids:
            narrowed["enum"] = ids
            narrowed.pop("maxLength", None)
    return narrowed


def link_artifacts(answer: str, files: RunFiles) -> str:
    """The answer with a markdown link to every file the run made that it does not link yet:
    `![name](url)` for pictures (chat UIs show them inline), `[name](url)` for other files."""
    links = []
    for made in files.made():
        url = files.url(made.file_id)
        if url in answer:
            continue
        name = re.sub(r"[\[\]]", "_", made.filename or made.file_id)  # a bracket would end the link text
        links.append(f"{'!' if made.kind == 'image' else ''}[{name}]({url})")
    if not links:
        return answer
    return f"{answer.rstrip()}\n\n" + "\n".join(links) if answer.strip() else "\n".join(links)
