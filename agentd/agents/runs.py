"""Every agent run's trace in SQLite, for `GET /v1/runs/{id}` and for debugging."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from agentd.agents.steps import Step
from agentd.store import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, agent TEXT NOT NULL,
    model TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL, finished_at REAL,
    input TEXT NOT NULL, steps TEXT NOT NULL DEFAULT '[]', answer TEXT, error TEXT,
    tool_choice TEXT NOT NULL DEFAULT '"auto"');
"""


class RunStore:
    def __init__(self, path: Path):
        self._db = Database(path, _SCHEMA)
        columns = {row["name"] for row in self._db.fetch_all("PRAGMA table_info(runs)")}
        if "tool_choice" not in columns:  # a runs.sqlite from before runs recorded their tool_choice
            self._db.execute("ALTER TABLE runs ADD COLUMN tool_choice TEXT NOT NULL DEFAULT '\"auto\"'")

    def start(self, run_id: str, thread_id: str, agent: str, model: str, user_input: str,
              tool_choice: str | dict[str, str] = "auto") -> None:
        self._db.execute("INSERT INTO runs (id, thread_id, agent, model, status, created_at, input, tool_choice) "
                         "VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
                         (run_id, thread_id, agent, model, time.time(), user_input, json.dumps(_wire(tool_choice))))

    def add_step(self, run_id: str, step: Step) -> None:
        # Appended inside SQLite, so a long run's trace is not read back and rewritten at every step.
        self._db.execute("UPDATE runs SET steps = json_insert(steps, '$[#]', json(?)) WHERE id = ?",
                         (json.dumps(step.to_dict()), run_id))

    def finish(self, run_id: str, status: str, answer: str | None = None, error: str | None = None) -> None:
        self._db.execute("UPDATE runs SET status = ?, finished_at = ?, answer = ?, error = ? WHERE id = ?",
                         (status, time.time(), answer, error, run_id))

    def get(self, run_id: str) -> dict[str, Any] | None:
        row = self._db.fetch_one("SELECT * FROM runs WHERE id = ?", (run_id,))
        return _record(row) if row else None

    def list(self, thread_id: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        query, params = "SELECT * FROM runs", ()
        if thread_id:
            query, params = query + " WHERE thread_id = ?", (thread_id,)
        rows = self._db.fetch_all(query + " ORDER BY created_at DESC LIMIT ?", (*params, limit))
        return [_record(row) for row in rows]

    def mark_interrupted(self) -> int:
        """Runs left `running` by a server that died are not running any more."""
        return self._db.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'").rowcount

    def close(self) -> None:
        self._db.close()


def _wire(tool_choice: str | dict[str, str]) -> str | dict[str, Any]:
    """Recorded as the client wrote it: a named choice in OpenAI's shape."""
    if isinstance(tool_choice, dict):
        return {"type": "function", "function": {"name": tool_choice["name"]}}
    return tool_choice


def _record(row: dict[str, Any]) -> dict[str, Any]:
    # Keys in column order, with "object" second, as the API has always shown them.
    return {"id": row["id"], "object": "agent.run", **row, "steps": json.loads(row["steps"]),
            "tool_choice": json.loads(row["tool_choice"])}
