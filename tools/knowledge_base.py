"""A knowledge base in one SQLite file: chunks of documents, BM25 over FTS5, optional embeddings.

Search fuses the BM25 ranking and the embedding ranking by reciprocal rank (no score
calibration needed); each hit carries a citation (source, section or page).
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from agentd.store import Database

CHUNK_CHARS = 1000
RRF_K = 60
# Left out of BM25 queries: with OR semantics they would match nearly every passage.
STOPWORDS = frozenset(
    "a an and are as at be by can do does for from how i in is it me my of on or should the this to was what when "
    "where which who why will with you your".split())


class Embedder(Protocol):
    id: str

    def embed(self, texts: list[str]) -> np.ndarray: ...


class UnreadableDocument(ValueError):
    """The bytes are not text, markdown or a PDF with extractable text."""


@dataclass(frozen=True)
class Chunk:
    text: str
    section: str = ""
    page: int | None = None


@dataclass(frozen=True)
class Hit:
    source: str
    title: str
    section: str
    page: int | None
    text: str
    score: float

    def citation(self) -> str:
        where = " › ".join(part for part in (self.source, self.section) if part)
        return where + (f" (p. {self.page})" if self.page else "")

    def to_dict(self) -> dict:
        return {**asdict(self), "citation": self.citation()}


@dataclass(frozen=True)
class Document:
    source: str
    title: str
    chunks: int
    added_at: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (id INTEGER PRIMARY KEY, source TEXT UNIQUE NOT NULL, title TEXT NOT NULL,
    sha256 TEXT NOT NULL, added_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, document_id INTEGER NOT NULL REFERENCES documents(id)
    ON DELETE CASCADE, ordinal INTEGER NOT NULL, text TEXT NOT NULL, section TEXT NOT NULL, page INTEGER,
    embedding BLOB);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, section, content='chunks', content_rowid='id',
    tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text, section) VALUES (new.id, new.text, new.section); END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, section) VALUES ('delete', old.id, old.text, old.section); END;
"""


class KnowledgeBase:
    def __init__(self, path: Path, embedder: Embedder | None = None):
        self.embedder = embedder
        self._db = Database(path, _SCHEMA)

    def ingest(self, source: str, data: bytes) -> Document:
        """Add (or replace) a document; the same bytes under the same name are a no-op."""
        digest = hashlib.sha256(data).hexdigest()
        row = self._db.fetch_one("SELECT sha256 FROM documents WHERE source = ?", (source,))
        if row and row["sha256"] == digest:
            return self.document(source)
        title, chunks = split_document(source, data)
        vectors = self.embedder.embed([c.text for c in chunks]) if self.embedder and chunks else None
        with self._db.transaction():
            # Deleting the document cascades to its chunks, and the chunks' triggers keep the FTS index in step.
            self._db.execute("DELETE FROM documents WHERE source = ?", (source,))
            document_id = self._db.execute(
                "INSERT INTO documents (source, title, sha256, added_at) VALUES (?, ?, ?, ?)",
                (source, title, digest, int(time.time()))).lastrowid
            for index, chunk in enumerate(chunks):
                self._db.execute(
                    "INSERT INTO chunks (document_id, ordinal, text, section, page, embedding) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (document_id, index, chunk.text, chunk.section, chunk.page,
                     None if vectors is None else vectors[index].tobytes()))
        return self.document(source)

    def document(self, source: str) -> Document:
        row = self._db.fetch_one(
            "SELECT source, title, (SELECT COUNT(*) FROM chunks WHERE document_id = documents.id) AS chunks, added_at "
            "FROM documents WHERE source = ?", (source,))
        if row is None:
            raise KeyError(source)
        return Document(**row)

    def documents(self) -> list[Document]:
        rows = self._db.fetch_all(
            "SELECT source, title, (SELECT COUNT(*) FROM chunks WHERE document_id = documents.id) AS chunks, added_at "
            "FROM documents ORDER BY source")
        return [Document(**row) for row in rows]

    def remove(self, source: str) -> bool:
        return self._db.execute("DELETE FROM documents WHERE source = ?", (source,)).rowcount > 0

    def search(self, query: str, top_k: int = 5) -> list[Hit]:
        rankings = [self._bm25(query, top_k * 4)]
        if self.embedder is not None:
            rankings.append(self._nearest(query, top_k * 4))
        fused: dict[int, float] = {}
        for ranking in rankings:
            for rank, chunk_id in enumerate(ranking):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank + 1)
        best = sorted(fused.items(), key=lambda item: -item[1])[:top_k]
        return [self._hit(chunk_id, score) for chunk_id, score in best]

    def _bm25(self, query: str, limit: int) -> list[int]:
        # Words as the index splits them: a model's snake_case query ("holiday_allowance") is two words,
        # not a phrase the handbook never writes.
        terms = re.findall(r"[^\W_]+", query.lower())
        terms = [term for term in terms if term not in STOPWORDS] or terms
        if not terms:
            return []
        match = " OR ".join(f'"{term}"' for term in terms)
        rows = self._db.fetch_all("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? "
                                  "ORDER BY bm25(chunks_fts, 1.0, 0.5) LIMIT ?", (match, limit))
        return [row["rowid"] for row in rows]

    def _nearest(self, query: str, limit: int) -> list[int]:
        rows = self._db.fetch_all("SELECT id, embedding FROM chunks WHERE embedding IS NOT NULL")
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(row["embedding"] for row in rows), dtype=np.float32).reshape(len(rows), -1)
        scores = matrix @ self.embedder.embed([query])[0]
        return [rows[index]["id"] for index in np.argsort(-scores)[:limit]]

    def _hit(self, chunk_id: int, score: float) -> Hit:
        row = self._db.fetch_one(
            "SELECT d.source, d.title, c.section, c.page, c.text FROM chunks c JOIN documents d "
            "ON d.id = c.document_id WHERE c.id = ?", (chunk_id,))
        return Hit(**row, score=round(score, 5))

    def close(self) -> None:
        self._db.close()


def split_document(source: str, data: bytes) -> tuple[str, list[Chunk]]:
    """Title and chunks of a PDF (per page), a markdown file (per section) or plain text."""
    if data.startswith(b"%PDF") or source.lower().endswith(".pdf"):
        return _split_pdf(source, data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableDocument(f"{source} is neither UTF-8 text nor a PDF") from None
    if "\x00" in text:
        raise UnreadableDocument(f"{source} looks binary, not text")
    return _split_markdown(source, text)


def _split_pdf(source: str, data: bytes) -> tuple[str, list[Chunk]]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        title = (reader.metadata.title if reader.metadata else None) or Path(source).stem
    except (PdfReadError, ValueError, KeyError) as error:
        raise UnreadableDocument(f"{source}: not a readable PDF ({error})") from None
    chunks = [Chunk(piece, "", number) for number, text in enumerate(pages, 1) for piece in _pack(text)]
    if not chunks:
        raise UnreadableDocument(f"{source}: the PDF has no extractable text (scanned pages need OCR)")
    return title, chunks


def _split_markdown(source: str, text: str) -> tuple[str, list[Chunk]]:
    title = Path(source).stem
    headings: list[str] = []
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if heading:
            level, name = len(heading[1]), heading[2]
            if level == 1 and title == Path(source).stem:
                title = name
            headings = headings[: level - 1] + [name]
            sections.append((" › ".join(headings), []))
        else:
            sections[-1][1].append(line)
    chunks = [Chunk(piece, section) for section, lines in sections for piece in _pack("\n".join(lines))]
    return title, chunks


def _pack(text: str, limit: int = CHUNK_CHARS) -> list[str]:
    """Paragraphs packed into chunks of at most `limit` characters; longer paragraphs split by sentence."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        while len(paragraph) > limit:
            cut = max(paragraph.rfind(". ", 0, limit), paragraph.rfind(" ", 0, limit))
            cut = cut + 1 if cut > 0 else limit
            pieces.append(paragraph[:cut].strip())
            paragraph = paragraph[cut:].strip()
        if paragraph:
            pieces.append(paragraph)
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + len(piece) + 2 <= limit:
            chunks[-1] += "\n\n" + piece
        else:
            chunks.append(piece)
    return chunks
