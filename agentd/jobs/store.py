"""The durable job store: one SQLite file shared by the server, its worker processes and the CLI.

Every state change is a row written before anything relies on it, so a job survives the
death of the process that was running it. WAL mode lets workers write progress while the
server reads it.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentd.store import Database

QUEUED, VALIDATING, RUNNING = "queued", "validating_files", "running"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
FINISHED = (SUCCEEDED, FAILED, CANCELLED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, params TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}', progress TEXT NOT NULL DEFAULT '{}', result TEXT,
    error TEXT, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0, worker_pid INTEGER, cancel_requested INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at);
-- The manager asks every tick which jobs succeeded since its last look.
CREATE INDEX IF NOT EXISTS jobs_by_end ON jobs (status, finished_at);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, created_at REAL NOT NULL,
    level TEXT NOT NULL, type TEXT NOT NULL, message TEXT NOT NULL, data TEXT);
CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, seq);
CREATE TABLE IF NOT EXISTS metrics (
    job_id TEXT NOT NULL, step INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (job_id, step));
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL, step INTEGER NOT NULL, path TEXT NOT NULL, metrics TEXT NOT NULL,
    created_at REAL NOT NULL, PRIMARY KEY (job_id, step));
CREATE TABLE IF NOT EXISTS artifacts (
    job_id TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, location TEXT NOT NULL,
    PRIMARY KEY (job_id, name));
"""


class JobNotFound(KeyError):
    def __str__(self) -> str:
        return f"no job with id {self.args[0]!r}"


@dataclass
class Job:
    id: str
    kind: str
    status: str
    params: dict[str, Any]
    metadata: dict[str, Any]
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    worker_pid: int | None
    cancel_requested: bool

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass
class Event:
    seq: int
    job_id: str
    created_at: float
    level: str
    type: str
    message: str
    data: dict[str, Any] | None = field(default=None)


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class JobStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._db = Database(self.path, _SCHEMA)

    # -- jobs -------------------------------------------------------------------------------

    def create(self, kind: str, params: dict[str, Any], *, metadata: dict[str, Any] | None = None,
               status: str = QUEUED, prefix: str = "job") -> Job:
        job_id = f"{prefix}-{secrets.token_hex(12)}"
        with self._db.transaction():
            self._db.execute("INSERT INTO jobs (id, kind, status, params, metadata, created_at) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (job_id, kind, status, json.dumps(params), json.dumps(metadata or {}), time.time()))
            self.add_event(job_id, f"created {kind} job", type="message")
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        row = self._db.fetch_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise JobNotFound(job_id)
        return self._job(row)

    @staticmethod
    def _job(row: dict[str, Any]) -> Job:
        return Job(**{**row, "params": json.loads(row["params"]), "metadata": json.loads(row["metadata"]),
                      "progress": json.loads(row["progress"]), "result": _load(row["result"]),
                      "error": _load(row["error"]), "cancel_requested": bool(row["cancel_requested"])})

    def list(self, *, kind: str | None = None, statuses: tuple[str, ...] = (), after: str | None = None,
             limit: int = 20) -> list[Job]:
        """Newest first; `after` is the id of the last job of the previous page."""
        clauses, params = [], []
        if kind:
            clauses.append("kind = ?")
            params.append(kind)
        if statuses:
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            params += statuses
        if after:
            anchor = self.get(after)
            clauses.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params += [anchor.created_at, anchor.created_at, anchor.id]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.fetch_all(f"SELECT * FROM jobs{where} ORDER BY created_at DESC, id DESC LIMIT ?",
                                  (*params, limit))
        return [self._job(row) for row in rows]

    def transition(self, job_id: str, old: str, new: str, message: str | None = None) -> bool:
        """old → new only if the job is still `old` (it may have been cancelled meanwhile)."""
        changed = self._db.execute("UPDATE jobs SET status = ? WHERE id = ? AND status = ?",
                                   (new, job_id, old)).rowcount == 1
        if changed and message:
            self.add_event(job_id, message)
        return changed

    def claim(self, job_id: str) -> bool:
        """queued → running for exactly one claimant (a server's manager or the CLI)."""
        cursor = self._db.execute("UPDATE jobs SET status = ?, started_at = COALESCE(started_at, ?), "
                                  "attempts = attempts + 1, worker_pid = NULL WHERE id = ? AND status = ?",
                                  (RUNNING, time.time(), job_id, QUEUED))
        return cursor.rowcount == 1

    def set_worker(self, job_id: str, pid: int | None) -> None:
        self._db.execute("UPDATE jobs SET worker_pid = ? WHERE id = ?", (pid, job_id))

    def request_cancel(self, job_id: str) -> None:
        self._db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))

    def finish(self, job_id: str, status: str, *, result: dict[str, Any] | None = None,
               error: dict[str, Any] | None = None, message: str | None = None) -> bool:
        """Record the end once: a job already finished (say, cancelled meanwhile) keeps its status."""
        cursor = self._db.execute("UPDATE jobs SET status = ?, result = COALESCE(?, result), error = ?, "
                                  "finished_at = ?, worker_pid = NULL WHERE id = ? AND status NOT IN (?, ?, ?)",
                                  (status, _dump(result), _dump(error), time.time(), job_id, *FINISHED))
        if cursor.rowcount and message:
            self.add_event(job_id, message, level="error" if status == FAILED else "info")
        return cursor.rowcount == 1

    def requeue(self, job_id: str, message: str) -> None:
        self._db.execute("UPDATE jobs SET status = ?, worker_pid = NULL WHERE id = ?", (QUEUED, job_id))
        self.add_event(job_id, message, level="warning")

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self._db.execute("UPDATE jobs SET progress = ? WHERE id = ?", (json.dumps(progress), job_id))

    # -- what a job leaves behind -----------------------------------------------------------

    def add_event(self, job_id: str, message: str, *, level: str = "info", type: str = "message",
                  data: dict[str, Any] | None = None) -> None:
        self._db.execute("INSERT INTO events (job_id, created_at, level, type, message, data) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (job_id, time.time(), level, type, message, _dump(data)))

    def events(self, job_id: str, *, after: int | None = None, limit: int = 100, newest_first: bool = False) -> list[Event]:
        order = "DESC" if newest_first else "ASC"
        bound = ("seq < ?" if newest_first else "seq > ?") if after is not None else "1"
        params = (job_id, after, limit) if after is not None else (job_id, limit)
        rows = self._db.fetch_all(f"SELECT * FROM events WHERE job_id = ? AND {bound} ORDER BY seq {order} LIMIT ?",
                                  params)
        return [Event(**{**row, "data": _load(row["data"])}) for row in rows]

    def add_metrics(self, job_id: str, step: int, data: dict[str, Any]) -> None:
        # A step replayed after a resume replaces what the crashed attempt wrote for it.
        self._db.execute("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?)", (job_id, step, json.dumps(data)))

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        return [json.loads(row["data"]) for row in
                self._db.fetch_all("SELECT data FROM metrics WHERE job_id = ? ORDER BY step", (job_id,))]

    def add_checkpoint(self, job_id: str, step: int, path: str, metrics: dict[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                         (job_id, step, path, json.dumps(metrics), time.time()))

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._db.fetch_all("SELECT step, path, metrics, created_at FROM checkpoints WHERE job_id = ? "
                                  "ORDER BY step DESC", (job_id,))
        return [{**row, "metrics": json.loads(row["metrics"])} for row in rows]

    def drop_checkpoint(self, job_id: str, path: str) -> None:
        self._db.execute("DELETE FROM checkpoints WHERE job_id = ? AND path = ?", (job_id, path))

    def add_artifact(self, job_id: str, name: str, kind: str, location: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?)", (job_id, name, kind, location))

    def artifacts(self, job_id: str) -> dict[str, dict[str, str]]:
        return {row["name"]: {"kind": row["kind"], "location": row["location"]} for row in
                self._db.fetch_all("SELECT name, kind, location FROM artifacts WHERE job_id = ?", (job_id,))}

    def close(self) -> None:
        self._db.close()

    # -- added for the jobs service ---------------------------------------------------------

    def succeeded_since(self, since: float) -> list[Job]:
        """Jobs that succeeded at or after `since` (a `finished_at` time), oldest first."""
        rows = self._db.fetch_all("SELECT * FROM jobs WHERE status = ? AND finished_at >= ? ORDER BY finished_at",
                                  (SUCCEEDED, since))
        return [self._job(row) for row in rows]

    def with_id_prefix(self, prefix: str) -> list[Job]:
        """Jobs whose id starts with `prefix` (a model id names its job by the first hex digits)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._db.fetch_all("SELECT * FROM jobs WHERE id LIKE ? ESCAPE '\\'", (escaped + "%",))
        return [self._job(row) for row in rows]
