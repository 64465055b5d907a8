"""Every agent run's trace in SQLite, for `GET /v1/runs/{id}` and for debugging."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from agentd.agents.steps import Step


class RunStore:
    def __init__(self, path: Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, agent TEXT NOT NULL,"
            " model TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL, finished_at REAL,"
            " input TEXT NOT NULL, steps TEXT NOT NULL DEFAULT '[]', answer TEXT, error TEXT)")
        self._db.commit()

    def start(self, run_id: str, thread_id: str, agent: str, model: str, user_input: str) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT INTO runs (id, thread_id, agent, model, status, created_at, input) "
                             "VALUES (?, ?, ?, ?, 'running', ?, ?)",
                             (run_id, thread_id, agent, model, time.time(), user_input))

    def add_step(self, run_id: str, step: Step) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE runs SET steps = json_insert(steps, '$[#]', json(?)) WHERE id = ?",
                             (json.dumps(step.to_dict()), run_id))

    def finish(self, run_id: str, status: str, answer: str | None = None, error: str | None = None) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE runs SET status = ?, finished_at = ?, answer = ?, error = ? WHERE id = ?",
                             (status, time.time(), answer, error, run_id))

    def get(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            cursor = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
            row = cursor.fetchone()
            names = [d[0] for d in cursor.description]
        return _record(dict(zip(names, row))) if row else None

    def list(self, thread_id: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        query, params = "SELECT * FROM runs", ()
        if thread_id:
            query, params = query + " WHERE thread_id = ?", (thread_id,)
        with self._lock:
            cursor = self._db.execute(query + " ORDER BY created_at DESC LIMIT ?", (*params, limit))
            rows = cursor.fetchall()
            names = [d[0] for d in cursor.description]
        return [_record(dict(zip(names, row))) for row in rows]

    def mark_interrupted(self) -> int:
        """Runs left `running` by a server that died are not running any more."""
        with self._lock, self._db:
            return self._db.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'").rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _record(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "object": "agent.run", "thread_id": row["thread_id"], "agent": row["agent"],
            "model": row["model"], "status": row["status"], "created_at": row["created_at"],
            "finished_at": row["finished_at"], "input": row["input"], "steps": json.loads(row["steps"]),
            "answer": row["answer"], "error": row["error"]}
