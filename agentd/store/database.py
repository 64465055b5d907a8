"""`Database`: one SQLite file, one connection, one lock; the layer under every agentd store."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# How long a write waits for another connection (a worker process, the CLI) to let go of the
# database. Writes are a few rows each, so waiting longer means something is stuck: better a
# StoreError the caller can report than a request that hangs.
BUSY_TIMEOUT_S = 10.0

# Primary result codes that describe the file or the machine, not the SQL: the caller cannot
# fix them by changing the query, so they leave the layer as StoreError. A mistake in the SQL
# stays a sqlite3 error: it is a bug to fix, not a state to report.
_SQLITE_BUSY = 5
_ENVIRONMENT_CODES = frozenset({
    3,  # SQLITE_PERM
    _SQLITE_BUSY,  # locked by another connection past the busy timeout
    6,  # SQLITE_LOCKED
    8,  # SQLITE_READONLY
    10,  # SQLITE_IOERR
    11,  # SQLITE_CORRUPT
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    26,  # SQLITE_NOTADB
})


class StoreError(RuntimeError):
    """The database cannot be used right now: locked past the busy timeout, disk full, unreadable, closed."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class Database:
    """A SQLite file shared safely by threads (one lock) and processes (WAL, bounded busy timeout).

    Rows come back as dicts keyed by column name. A statement run with `execute` outside
    `transaction()` commits on its own; statements inside one `transaction()` commit together.

        db = Database(path, "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT)")
        with db.transaction():
            db.execute("DELETE FROM notes")
            db.execute("INSERT INTO notes (text) VALUES (?)", ("hello",))
        db.fetch_all("SELECT * FROM notes")  # [{"id": 1, "text": "hello"}]
    """

    def __init__(self, path: str | Path, schema: str = "", *, busy_timeout_s: float = BUSY_TIMEOUT_S):
        self.path = Path(path)
        # Re-entrant so that helpers called inside `transaction()` take the lock the block already holds.
        self._lock = threading.RLock()
        self._closed = False
        self._busy_timeout_s = busy_timeout_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(self.path, f"cannot create its folder ({error.strerror or error})") from error
        with self._translated():
            # isolation_level=None: sqlite3 opens no implicit transactions; writes are grouped only
            # by `transaction()`, so a lone statement never sits uncommitted holding the write lock.
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                       check_same_thread=False)
        self._db.row_factory = _as_dict
        try:
            with self._translated():
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                if schema:
                    self._create(schema)
        except BaseException:
            self.close()
            raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """One statement; the cursor tells `rowcount` and `lastrowid`."""
        with self._lock, self._translated():
            return self._connection().execute(sql, params)

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock, self._translated():
            return self._connection().execute(sql, params).fetchall()

    def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        with self._lock, self._translated():
            return self._connection().execute(sql, params).fetchone()

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Statements in the block commit together, or not at all if it raises; other threads wait.

        IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
        writes can fail at once with "database is locked" instead of waiting its turn.
        A transaction opened inside another joins it.
        """
        with self._lock:
            connection = self._connection()
            if connection.in_transaction:
                yield self
                return
            with self._translated():
                connection.execute("BEGIN IMMEDIATE")
                try:
                    yield self
                except BaseException:
                    connection.rollback()
                    raise
                try:
                    connection.commit()
                except BaseException:
                    connection.rollback()
                    raise

    def close(self) -> None:
        """Safe to call more than once, and from any thread."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _create(self, schema: str) -> None:
        # One transaction, so two processes opening a new file at once cannot interleave their CREATEs.
        try:
            self._db.executescript(f"BEGIN IMMEDIATE;\n{schema}\nCOMMIT;")
        except BaseException:
            if self._db.in_transaction:
                self._db.rollback()
            raise

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(self.path, "the database is closed")
        return self._db

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
            if code not in _ENVIRONMENT_CODES:
                raise
            reason = str(error) + (f" (waited {self._busy_timeout_s:g} s)" if code == _SQLITE_BUSY else "")
            raise StoreError(self.path, reason) from error


def _as_dict(cursor: sqlite3.Cursor, row: tuple) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row)}

