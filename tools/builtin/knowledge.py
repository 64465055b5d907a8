"""`knowledge_search`, `knowledge_ingest`, `knowledge_documents`: the knowledge base as tools."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from tools.base import ToolError
from tools.decorator import Toolkit, tool
from tools.knowledge_base import KnowledgeBase, UnreadableDocument
from tools.media import File


class KnowledgeTools(Toolkit):
    def __init__(self, knowledge_base: KnowledgeBase):
        self.knowledge_base = knowledge_base

    def close(self) -> None:
        """The registry calls this on shutdown; the toolkit owns its knowledge base."""
        self.knowledge_base.close()

    @tool
    def knowledge_search(self, query: str,
                         top_k: Annotated[int, Field(ge=1, le=20)] = 5) -> list[dict]:
        """Search the knowledge base of ingested documents; returns the best passages with citations.

        Args:
            query: what to look for, in words.
            top_k: how many passages to return.
        """
        hits = self.knowledge_base.search(query, top_k)
        if not hits:
            raise ToolError(f"nothing in the knowledge base matches {query!r}"
                            + ("" if self.knowledge_base.documents() else " (it is empty; ingest documents first)"))
        return [{"citation": f"[{rank}] {hit.citation()}", "text": hit.text, "source": hit.source,
                 "section": hit.section, "page": hit.page} for rank, hit in enumerate(hits, 1)]

    @tool(timeout=600)
    def knowledge_ingest(self, document: File) -> dict:
        """Add a text, markdown or PDF document to the knowledge base (replacing one of the same name).

        Args:
            document: the document to add.
        """
        try:
            added = self.knowledge_base.ingest(document.filename, document.data)
        except UnreadableDocument as error:
            raise ToolError(str(error)) from None
        return {"source": added.source, "title": added.title, "chunks": added.chunks}

    @tool(changing=True)
    def knowledge_documents(self) -> list[dict]:
        """List the documents in the knowledge base."""
        return [{"source": d.source, "title": d.title, "chunks": d.chunks} for d in self.knowledge_base.documents()]
