"""The SQLite layer under every store: real files, threads, a second connection, reopening, failures."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from agentd.agents.runs import RunStore
from agentd.agents.steps import FinalAnswer
from agentd.jobs.store import JobStore
from agentd.store import Database, StoreError
from tools.builtin import builtin_tools
from tools.builtin.knowledge import KnowledgeTools
from tools.files import FileStore
from tools.knowledge_base import KnowledgeBase
from tools.registry import ToolRegistry

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, writer INTEGER NOT NULL, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counts (writer INTEGER PRIMARY KEY, n INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS notes_count AFTER INSERT ON notes BEGIN
    INSERT INTO counts VALUES (new.writer, 1) ON CONFLICT (writer) DO UPDATE SET n = n + 1; END;
"""


def test_rows_are_dicts_and_a_failed_transaction_leaves_nothing(tmp_path):
    db = Database(tmp_path / "deep" / "folder" / "notes.sqlite", SCHEMA)
    db.execute("INSERT INTO notes (writer, text) VALUES (?, ?)", (1, "kept"))
    with pytest.raises(ZeroDivisionError), db.transaction():
        db.execute("INSERT INTO notes (writer, text) VALUES (?, ?)", (1, "rolled back"))
        1 / 0
    assert db.fetch_all("SELECT writer, text FROM notes") == [{"writer": 1, "text": "kept"}]
    assert db.fetch_one("SELECT n FROM counts WHERE writer = 1") == {"n": 1}
    assert db.fetch_one("SELECT n FROM counts WHERE writer = 2") is None
    # A mistake in the SQL is the caller's bug, not the database's state: it stays a sqlite3 error.
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        db.fetch_all("SELECT * FROM missing_table")
    db.close()


def test_concurrent_writers_from_threads_and_a_second_connection_lose_nothing(tmp_path):
    path = tmp_path / "notes.sqlite"
    shared, other = Database(path, SCHEMA), Database(path, SCHEMA)
    failures: list[BaseException] = []

    def write(db: Database, writer: int) -> None:
        try:
            for n in range(25):
                with db.transaction():
                    db.execute("INSERT INTO notes (writer, text) VALUES (?, ?)", (writer, f"note {n}"))
                    db.execute("INSERT INTO notes (writer, text) VALUES (?, ?)", (writer, f"note {n} again"))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            failures.append(error)

    threads = [threading.Thread(target=write, args=(shared if writer % 2 else other, writer)) for writer in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert shared.fetch_one("SELECT COUNT(*) AS n FROM notes") == {"n": 8 * 50}
    assert other.fetch_all("SELECT n FROM counts ORDER BY writer") == [{"n": 50}] * 8
    shared.close()
    other.close()


def test_a_locked_database_gives_store_error_within_the_timeout(tmp_path):
    path = tmp_path / "notes.sqlite"
    db = Database(path, SCHEMA, busy_timeout_s=0.3)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        for write in (lambda: db.execute("INSERT INTO notes (writer, text) VALUES (1, 'x')"),
                      lambda: db.transaction().__enter__()):
            started = time.monotonic()
            with pytest.raises(StoreError) as raised:
                write()
            assert time.monotonic() - started < 3
            assert raised.value.path == path and "database is locked" in raised.value.reason
        assert db.fetch_all("SELECT * FROM notes") == []  # WAL: readers are not blocked by a writer
    finally:
        holder.rollback()
        holder.close()
    db.execute("INSERT INTO notes (writer, text) VALUES (1, 'after')")  # usable again once the lock is gone
    assert db.fetch_one("SELECT COUNT(*) AS n FROM notes") == {"n": 1}
    db.close()


def test_a_full_disk_gives_store_error(tmp_path):
    db = Database(tmp_path / "notes.sqlite", SCHEMA)
    pages = db.fetch_one("PRAGMA page_count")["page_count"]
    db.execute(f"PRAGMA max_page_count = {pages + 2}")  # as if the disk had room for two more pages
    with pytest.raises(StoreError, match="full") as raised:
        for _ in range(10):
            db.execute("INSERT INTO notes (writer, text) VALUES (1, ?)", ("x" * 10_000,))
    assert "database or disk is full" in raised.value.reason
    db.close()


def test_close_twice_is_harmless_and_use_after_close_is_a_store_error(tmp_path):
    db = Database(tmp_path / "notes.sqlite", SCHEMA)
    db.close()
    db.close()
    assert db.closed
    with pytest.raises(StoreError, match="closed"):
        db.fetch_all("SELECT * FROM notes")
    with pytest.raises(StoreError, match="closed"), db.transaction():
        pass


def test_a_file_that_is_not_a_database_gives_store_error(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"this is not a database, just some text that happens to be here" * 100)
    with pytest.raises(StoreError, match="not a database") as raised:
        Database(path, SCHEMA)
    assert raised.value.path == path


def test_every_store_reopens_its_file_and_closes_twice(tmp_path):
    jobs = JobStore(tmp_path / "jobs.sqlite")
    job = jobs.create("fine_tune", {"model": "tiny"}, metadata={"team": "a"})
    jobs.add_checkpoint(job.id, 2, "/ckpt/2", {"loss": 1.5})
    jobs.add_artifact(job.id, "adapter", "lora", "/out")
    jobs.finish(job.id, "failed", error={"message": "boom"}, message="it failed")
    runs = RunStore(tmp_path / "runs.sqlite")
    runs.start("run-1", "thread-1", "agentd-react", "tiny", "hello")
    runs.add_step("run-1", FinalAnswer(answer="hi"))
    runs.finish("run-1", "completed", answer="hi")
    files = FileStore(tmp_path / "files")
    stored = files.put(b"a,b\n", "table.csv", purpose="fine-tune")
    knowledge = KnowledgeBase(tmp_path / "kb.sqlite")
    knowledge.ingest("guide.md", b"# Guide\n\n## Backups\n\nCopy the data directory to back it up.")
    for store in (jobs, runs, files, knowledge):
        store.close()
        store.close()

    jobs, runs = JobStore(tmp_path / "jobs.sqlite"), RunStore(tmp_path / "runs.sqlite")
    files, knowledge = FileStore(tmp_path / "files"), KnowledgeBase(tmp_path / "kb.sqlite")
    again = jobs.get(job.id)
    assert (again.status, again.error, again.metadata, again.cancel_requested) == ("failed", {"message": "boom"},
                                                                                   {"team": "a"}, False)
    assert [event.message for event in jobs.events(job.id)] == ["created fine_tune job", "it failed"]
    assert jobs.checkpoints(job.id)[0]["metrics"] == {"loss": 1.5}
    assert jobs.artifacts(job.id) == {"adapter": {"kind": "lora", "location": "/out"}}
    run = runs.get("run-1")
    assert list(run)[:3] == ["id", "object", "thread_id"]
    assert (run["status"], run["answer"], len(run["steps"])) == ("completed", "hi", 1)
    assert files.get(stored.id) == stored and files.read(stored.id) == b"a,b\n"
    assert knowledge.search("back up")[0].section == "Guide › Backups"
    assert knowledge.documents()[0].chunks == 1
    for store in (jobs, runs, files, knowledge):
        store.close()


def test_closing_the_tool_registry_closes_its_file_store_and_knowledge_base(tmp_path):
    builtins = builtin_tools(tmp_path)
    knowledge = next(toolkit for toolkit in builtins if isinstance(toolkit, KnowledgeTools)).knowledge_base
    files = FileStore(tmp_path / "files")
    registry = ToolRegistry(builtins, file_store=files)
    stored = files.put(b"notes", "notes.txt")
    registry.close()
    registry.close()
    with pytest.raises(StoreError, match="closed"):
        files.get(stored.id)
    with pytest.raises(StoreError, match="closed"):
        knowledge.documents()
