"""Stored responses (`store: true`, the default) in SQLite: for `GET /v1/responses/{id}`, its input
items, and `previous_response_id`, which continues the conversation a stored response ended."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentd.store import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, created_at REAL NOT NULL, model TEXT NOT NULL,
    status TEXT NOT NULL, response TEXT NOT NULL, context TEXT NOT NULL, thread_id TEXT);
"""


class ResponseStore:
    def __init__(self, path: Path):
        self._db = Database(path, _SCHEMA)

    def save(self, response: dict[str, Any], context: list[dict[str, Any]], thread_id: str | None = None) -> None:
        """Records the response as it stands (again as it changes). `context` is every item the model
        saw: the continued conversation and this response's input."""
        self._db.execute(
            "INSERT INTO responses (id, created_at, model, status, response, context, thread_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET status = excluded.status, "
            "response = excluded.response, thread_id = excluded.thread_id",
            (response["id"], response["created_at"], response["model"], response["status"],
             json.dumps(response), json.dumps(context), thread_id))

    def get(self, response_id: str) -> dict[str, Any] | None:
        """{"response", "context", "thread_id"} of a stored response, or None."""
        row = self._db.fetch_one("SELECT response, context, thread_id FROM responses WHERE id = ?", (response_id,))
        if row is None:
            return None
        return {"response": json.loads(row["response"]), "context": json.loads(row["context"]),
                "thread_id": row["thread_id"]}

    def delete(self, response_id: str) -> bool:
        return self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

    def mark_interrupted(self) -> int:
        """Responses a stopped server left in progress failed: nothing is producing them any more."""
        rows = self._db.fetch_all("SELECT id, response FROM responses WHERE status = 'in_progress'")
        for row in rows:
            response = json.loads(row["response"])
            response.update(status="failed", error={"code": "server_error",
                                                    "message": "the server stopped while this response was made"})
            self._db.execute("UPDATE responses SET status = 'failed', response = ? WHERE id = ?",
                             (json.dumps(response), row["id"]))
        return len(rows)

    def close(self) -> None:
        self._db.close()
