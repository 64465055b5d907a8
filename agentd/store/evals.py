"""The Evals API's own records: eval definitions, and each run's link to the evaluation job doing it.

What a run computed (per-sample outputs and grades) lives in the evaluation result store and
its status in the job store; a run row keeps only what OpenAI's run object needs besides them
(name, data source as given, metadata) and, once the run has ended, its summary (counts and
usage), so that listing runs does not re-read every sample.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentd.store.database import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evals (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, data_source_config TEXT NOT NULL, testing_criteria TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS evals_by_created ON evals (created_at, id);
CREATE INDEX IF NOT EXISTS evals_by_updated ON evals (updated_at, id);
CREATE TABLE IF NOT EXISTS eval_runs (
    id TEXT PRIMARY KEY, eval_id TEXT NOT NULL REFERENCES evals (id) ON DELETE CASCADE, name TEXT NOT NULL,
    job_id TEXT NOT NULL, model TEXT NOT NULL, data_source TEXT NOT NULL, metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL, summary TEXT);
CREATE INDEX IF NOT EXISTS eval_runs_by_eval ON eval_runs (eval_id, created_at, id);
"""


class EvalNotFound(KeyError):
    def __str__(self) -> str:
        return f"no eval with id {self.args[0]!r}"


class RunNotFound(KeyError):
    def __str__(self) -> str:
        return f"no run with id {self.args[0]!r} in this eval"


@dataclass
class EvalRecord:
    id: str
    name: str
    data_source_config: dict[str, Any]
    testing_criteria: list[dict[str, Any]]
    metadata: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass
class RunRecord:
    id: str
    eval_id: str
    name: str
    job_id: str
    model: str
    data_source: dict[str, Any]
    metadata: dict[str, Any]
    created_at: float
    summary: dict[str, Any] | None  # set once the run has ended


class EvalStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._db = Database(self.path, _SCHEMA)

    # -- evals ------------------------------------------------------------------------------

    def create_eval(self, *, name: str, data_source_config: dict[str, Any], testing_criteria: list[dict[str, Any]],
                    metadata: dict[str, Any] | None = None) -> EvalRecord:
        eval_id, now = f"eval_{secrets.token_hex(12)}", time.time()
        self._db.execute("INSERT INTO evals VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (eval_id, name, json.dumps(data_source_config), json.dumps(testing_criteria),
                          json.dumps(metadata or {}), now, now))
        return self.get_eval(eval_id)

    def get_eval(self, eval_id: str) -> EvalRecord:
        row = self._db.fetch_one("SELECT * FROM evals WHERE id = ?", (eval_id,))
        if row is None:
            raise EvalNotFound(eval_id)
        return _eval(row)

    def list_evals(self, *, after: str | None = None, limit: int = 20, order: str = "asc",
                   order_by: str = "created_at") -> list[EvalRecord]:
        """A page in `order` of `order_by` (created_at | updated_at); `after` is the previous page's last id."""
        column = "updated_at" if order_by == "updated_at" else "created_at"
        direction, compare = ("DESC", "<") if order == "desc" else ("ASC", ">")
        clause, params = "", []
        if after:
            anchor = self.get_eval(after)
            value = getattr(anchor, column)
            clause = f"WHERE ({column} {compare} ? OR ({column} = ? AND id {compare} ?))"
            params = [value, value, anchor.id]
        rows = self._db.fetch_all(f"SELECT * FROM evals {clause} ORDER BY {column} {direction}, id {direction} "
                                  "LIMIT ?", (*params, limit))
        return [_eval(row) for row in rows]

    def update_eval(self, eval_id: str, *, name: str | None = None,
                    metadata: dict[str, Any] | None = None) -> EvalRecord:
        with self._db.transaction():
            current = self.get_eval(eval_id)
            self._db.execute("UPDATE evals SET name = ?, metadata = ?, updated_at = ? WHERE id = ?",
                             (current.name if name is None else name,
                              json.dumps(current.metadata if metadata is None else metadata), time.time(), eval_id))
        return self.get_eval(eval_id)

    def delete_eval(self, eval_id: str) -> list[RunRecord]:
        """Deletes the eval and its runs; returns those runs (their jobs may need cancelling)."""
        with self._db.transaction():
            self.get_eval(eval_id)
            runs = self.list_runs(eval_id, limit=1_000_000)
            self._db.execute("DELETE FROM eval_runs WHERE eval_id = ?", (eval_id,))
            self._db.execute("DELETE FROM evals WHERE id = ?", (eval_id,))
        return runs

    # -- runs -------------------------------------------------------------------------------

    def create_run(self, *, eval_id: str, name: str, job_id: str, model: str, data_source: dict[str, Any],
                   metadata: dict[str, Any] | None = None) -> RunRecord:
        run_id = f"evalrun_{secrets.token_hex(12)}"
        self._db.execute("INSERT INTO eval_runs (id, eval_id, name, job_id, model, data_source, metadata, "
                         "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (run_id, eval_id, name, job_id, model, json.dumps(data_source), json.dumps(metadata or {}),
                          time.time()))
        return self.get_run(eval_id, run_id)

    def get_run(self, eval_id: str, run_id: str) -> RunRecord:
        row = self._db.fetch_one("SELECT * FROM eval_runs WHERE id = ? AND eval_id = ?", (run_id, eval_id))
        if row is None:
            raise RunNotFound(run_id)
        return _run(row)

    def list_runs(self, eval_id: str, *, after: str | None = None, limit: int = 20,
                  order: str = "asc") -> list[RunRecord]:
        direction, compare = ("DESC", "<") if order == "desc" else ("ASC", ">")
        clause, params = "", []
        if after:
            anchor = self.get_run(eval_id, after)
            clause = f"AND (created_at {compare} ? OR (created_at = ? AND id {compare} ?))"
            params = [anchor.created_at, anchor.created_at, anchor.id]
        rows = self._db.fetch_all(f"SELECT * FROM eval_runs WHERE eval_id = ? {clause} "
                                  f"ORDER BY created_at {direction}, id {direction} LIMIT ?",
                                  (eval_id, *params, limit))
        return [_run(row) for row in rows]

    def set_summary(self, run_id: str, summary: dict[str, Any]) -> None:
        self._db.execute("UPDATE eval_runs SET summary = ? WHERE id = ?", (json.dumps(summary), run_id))

    def delete_run(self, eval_id: str, run_id: str) -> RunRecord:
        with self._db.transaction():
            run = self.get_run(eval_id, run_id)
            self._db.execute("DELETE FROM eval_runs WHERE id = ?", (run_id,))
        return run

    def close(self) -> None:
        self._db.close()


def _eval(row: dict[str, Any]) -> EvalRecord:
    return EvalRecord(**{**row, "data_source_config": json.loads(row["data_source_config"]),
                         "testing_criteria": json.loads(row["testing_criteria"]),
                         "metadata": json.loads(row["metadata"])})


def _run(row: dict[str, Any]) -> RunRecord:
    return RunRecord(**{**row, "data_source": json.loads(row["data_source"]), "metadata": json.loads(row["metadata"]),
                        "summary": json.loads(row["summary"]) if row["summary"] else None})
