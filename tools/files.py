"""A file store: bytes on disk, metadata in SQLite, each file named by an OpenAI-style id.

Tool artifacts (images a tool made), pictures a chat client sent and, later, uploads through
`/v1/files` all live here, so a value can travel between a client, an agent and a tool as a
short `file-…` id instead of as bytes.
"""

from __future__ import annotations

import mimetypes
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from agentd.store import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, filename TEXT NOT NULL, bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL, purpose TEXT NOT NULL, mime_type TEXT NOT NULL);
"""


class FileNotFound(KeyError):
    def __str__(self) -> str:
        return f"no file with id {self.args[0]!r}"


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    bytes: int
    created_at: int
    purpose: str
    mime_type: str

    def to_openai(self) -> dict:
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed"}


class FileStore:
    """Thread-safe: the metadata database is shared under one lock (writes are rare and small)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._blobs = self.root / "blobs"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._db = Database(self.root / "files.sqlite", _SCHEMA)

    def put(self, data: bytes, filename: str, purpose: str = "assistants", mime_type: str | None = None) -> StoredFile:
        stored = StoredFile(
            id=f"file-{secrets.token_hex(12)}", filename=Path(filename).name or "file", bytes=len(data),
            created_at=int(time.time()), purpose=purpose,
            mime_type=mime_type or mimetypes.guess_type(filename)[0] or "application/octet-stream")
        partial = self._blobs / f"{stored.id}.partial"
        partial.write_bytes(data)
        partial.rename(self._blobs / stored.id)
        try:
            self._db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)",
                             (stored.id, stored.filename, stored.bytes, stored.created_at, stored.purpose,
                              stored.mime_type))
        except BaseException:
            (self._blobs / stored.id).unlink(missing_ok=True)  # no bytes on disk that no id names
            raise
        return stored

    def get(self, file_id: str) -> StoredFile:
        row = self._db.fetch_one("SELECT * FROM files WHERE id = ?", (file_id,))
        if row is None:
            raise FileNotFound(file_id)
        return StoredFile(**row)

    def read(self, file_id: str) -> bytes:
        return self.path(file_id).read_bytes()

    def path(self, file_id: str) -> Path:
        self.get(file_id)
        return self._blobs / file_id

    def list(self, purpose: str | None = None, limit: int = 100, *, after: str | None = None,
             order: str = "desc") -> list[StoredFile]:
        """`after` is the id of the last file of the previous page (OpenAI's cursor)."""
        clauses, params = [], []
        if purpose:
            clauses.append("purpose = ?")
            params.append(purpose)
        direction, compare = ("DESC", "<") if order == "desc" else ("ASC", ">")
        if after:
            anchor = self.get(after)
            clauses.append(f"(created_at {compare} ? OR (created_at = ? AND id {compare} ?))")
            params += [anchor.created_at, anchor.created_at, anchor.id]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.fetch_all(f"SELECT * FROM files{where} ORDER BY created_at {direction}, id {direction} LIMIT ?",
                                  (*params, limit))
        return [StoredFile(**row) for row in rows]

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        self._db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        (self._blobs / file_id).unlink(missing_ok=True)

    def close(self) -> None:
        self._db.close()
